"""Ground truth for ranking: real FedAvg curves of sampled candidates, several seeds, every round.

Every claim about a proxy ("it ranks candidates like FedAvg does") is checked against this table.
A plan samples ``n`` distinct candidates uniformly from a search space with a stated seed (the
study's reference candidate always first), and each candidate is trained with real FedAvg on the
study's federation for ``rounds`` rounds under ``replicates`` seeds. Replicate ``k`` runs FedAvg
with seed ``study_seed + k``: model initialisation, client sampling and local shuffling all derive
from it, so replicate 0 is exactly what validation trains, and two replicates differ only in that
luck. One row per (candidate, replicate, round): test accuracy and loss after the round, cumulative
bytes from the engine's ledger, cumulative wall seconds.

Sampling is prefix-stable: the first ``m`` candidates of a plan for ``n > m`` are the plan for
``m``, so a longer run on a subset (the R-vs-2R check) trains the same networks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pandas as pd

from distdd_nas.data import ImageDataset
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg import FedAvgSettings, run_fedavg
from distdd_nas.federation import Engine
from distdd_nas.federation.quorum import DEFAULT_QUORUM, Quorum
from distdd_nas.search.candidate import PARAM_PREFIX, Candidate, CandidateFactory
from distdd_nas.search.space import SearchSpace
from distdd_nas.seeding import numpy_rng

#: Columns of the curves table, in order.
CURVE_COLUMNS = (
    "candidate_id",
    "replicate",
    "seed",
    "round",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "bytes_up",
    "bytes_down",
    "wall_s",
)
#: Draws allowed per requested candidate before the space counts as too small.
MAX_DRAWS_PER_CANDIDATE = 200


@dataclass(frozen=True)
class Unit:
    """One FedAvg training of the plan: a candidate under one replicate seed."""

    index: int
    candidate: Candidate
    replicate: int
    seed: int
    key: str = ""  # the table's id of the candidate (default: its candidate_id)

    @property
    def candidate_id(self) -> str:
        """The id its rows carry: the table's (stable across proxy settings) or its own."""
        return self.key or self.candidate.candidate_id


@dataclass(frozen=True)
class GroundTruthPlan:
    """What to train: candidates (reference first), replicates, rounds, and the root seed."""

    candidates: tuple[Candidate, ...]
    replicates: int
    rounds: int
    seed: int

    def units(self) -> Iterator[Unit]:
        """Candidate-major order: a partial table always holds whole candidates (every seed)."""
        for index, candidate in enumerate(self.candidates):
            for k in range(self.replicates):
                yield Unit(index, candidate, k, self.seed + k)


def sample_candidates(
    space: SearchSpace, factory: CandidateFactory, *, n: int, seed: int, reference: Candidate
) -> tuple[Candidate, ...]:
    """``n`` distinct candidates: ``reference`` first, then uniform draws from ``space``.

    Draws come from the named stream ``(seed, "groundtruth", "sample")``; duplicates (same
    ``candidate_id``) are skipped, so the result is prefix-stable in ``n``.

    Raises:
        ConfigError: ``n`` < 1, or the space has fewer than ``n`` distinct candidates.
    """
    if n < 1:
        raise ConfigError(f"groundtruth.candidates={n} is too small; ask for at least 1")
    rng = numpy_rng(seed, "groundtruth", "sample")
    out: list[Candidate] = [reference]
    seen = {c.candidate_id for c in out}
    draws = 0
    while len(out) < n:
        draws += 1
        if draws > MAX_DRAWS_PER_CANDIDATE * n:
            raise ConfigError(
                f"space {space.name!r} gave only {len(out)} distinct candidates in {draws - 1} "
                f"draws; ask for fewer (groundtruth.candidates) or use a larger space"
            )
        candidate = factory({**space.fixed, **space.sample(rng)})
        if candidate.candidate_id not in seen:
            seen.add(candidate.candidate_id)
            out.append(candidate)
    return tuple(out[:n])


def candidate_table(
    candidates: tuple[Candidate, ...], *, num_parameters: Callable[[Candidate], int]
) -> pd.DataFrame:
    """One row per candidate: sample index, id, model name, parameter count, ``params_*``
    (``is_reference``: the first candidate, which :func:`sample_candidates` puts there)."""
    rows = []
    for index, c in enumerate(candidates):
        rows.append(
            {
                "index": index,
                "candidate_id": c.candidate_id,
                "is_reference": index == 0,
                "model": c.describe(),
                "num_parameters": num_parameters(c),
                **{f"{PARAM_PREFIX}{k}": v for k, v in c.params.items()},
            }
        )
    return pd.DataFrame(rows)


def train_unit(
    engine: Engine,
    unit: Unit,
    *,
    test: ImageDataset,
    base: FedAvgSettings,
    rounds: int,
    quorum: Quorum = DEFAULT_QUORUM,
) -> pd.DataFrame:
    """Real FedAvg of one unit on ``engine`` (fresh ledger), evaluated after every round."""
    settings = replace(unit.candidate.fedavg_settings(base), rounds=rounds, eval_every=1)
    result = run_fedavg(
        engine,
        arch=unit.candidate.arch,
        test=test,
        settings=settings,
        seed=unit.seed,
        quorum=quorum,
    )
    h = result.history
    frame = pd.DataFrame(
        {
            "candidate_id": unit.candidate_id,
            "replicate": unit.replicate,
            "seed": unit.seed,
            "round": h["round"].astype(int),
            "test_accuracy": h["test_accuracy"],
            "test_loss": h["test_loss"],
            "train_loss": h["train_loss"],
            "bytes_up": h["bytes_up"].astype("int64"),
            "bytes_down": h["bytes_down"].astype("int64"),
            "wall_s": h["wall_s"],
        }
    )
    return frame[list(CURVE_COLUMNS)]


__all__ = [
    "CURVE_COLUMNS",
    "GroundTruthPlan",
    "Unit",
    "candidate_table",
    "sample_candidates",
    "train_unit",
]
