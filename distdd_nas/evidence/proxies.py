"""Cheap proxies of a candidate pool: one score per candidate (higher = predicted better) plus
what each score cost in bytes on the wire and seconds.

* :func:`fedavg_after` — real FedAvg stopped after ``r`` rounds, read from the ground-truth
  table's *other* replicate (the truth is replicate 0 at the final round, so a proxy read from
  replicate 0 would share its luck). Bytes: that curve's cumulative bytes at round ``r``.
* :func:`parameter_count` — bigger is predicted better (the sign a "just pick the largest
  network" baseline takes). Free.
* :func:`naswot` — training-free NASWOT (Mellor et al., ICML 2021) on the distilled set at
  initialisation: log|K| of the Hamming kernel of the binary activation codes of a batch. Free
  (the server holds the distilled set).
* :func:`distilled_proxy` — the product's own scoring: :class:`ProxyScorer` trains the
  candidate on the distilled set and scores it, the same call the search makes. Bytes: the
  scorer engine's ledger difference (federated scoring sends every trained model to the
  clients); 0 with ``server_holdout`` scoring.
* :func:`random_real_proxy` — the same scoring, trained on a random real subset with the same
  images per class drawn from the federation's training data. A **centralized reference, not
  a private method**: it needs raw client data on the server.

Every function takes objects (tables, candidates, a scorer) and returns :class:`ProxyScores`
in the order of its input; every random choice comes from a seeded generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from distdd_nas.data import ImageDataset
from distdd_nas.distill import DistilledSet, random_real_subset
from distdd_nas.errors import ConfigError
from distdd_nas.models import build_model
from distdd_nas.search.candidate import Candidate
from distdd_nas.search.objective import ProxyScorer
from distdd_nas.seeding import derive_seed, numpy_rng

#: Modules whose input sign gives NASWOT's binary code (the pre-activation for sigmoid too).
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid)
#: Images NASWOT looks at (Mellor et al. use a batch of 128).
NASWOT_BATCH = 128


@dataclass(frozen=True, eq=False)
class ProxyScores:
    """Scores of one proxy, aligned with ``candidate_ids``.

    Attributes:
        name: Short column-friendly name (``distdd_e100``, ``fedavg_r2``, ...).
        candidate_ids: One id per score, in the order the proxy was given.
        scores: Float scores, higher = predicted better.
        bytes: Bytes each score cost on the wire (int64; zeros for server-side proxies).
        seconds: Wall seconds each score cost (for ``fedavg_after``: the table's).
        note: What the proxy is, for tables (e.g. "centralized reference").
    """

    name: str
    candidate_ids: tuple[str, ...]
    scores: np.ndarray
    bytes: np.ndarray
    seconds: np.ndarray
    note: str = ""

    def __post_init__(self) -> None:
        n = len(self.candidate_ids)
        if not len(self.scores) == len(self.bytes) == len(self.seconds) == n:
            raise ConfigError(
                f"proxy {self.name!r} has {n} ids but {len(self.scores)} scores, "
                f"{len(self.bytes)} byte counts and {len(self.seconds)} timings; pass one each"
            )

    @property
    def total_bytes(self) -> int:
        return int(np.sum(self.bytes))

    @property
    def total_seconds(self) -> float:
        return float(np.sum(self.seconds))

    def relabel(self, candidate_ids: Sequence[str]) -> ProxyScores:
        """The same scores under other ids (e.g. the ground-truth table's, position by
        position)."""
        return replace(self, candidate_ids=tuple(str(c) for c in candidate_ids))

    def to_frame(self) -> pd.DataFrame:
        """Columns ``candidate_id``, ``<name>``, ``<name>_bytes``, ``<name>_s``."""
        return pd.DataFrame(
            {
                "candidate_id": list(self.candidate_ids),
                self.name: self.scores,
                f"{self.name}_bytes": self.bytes,
                f"{self.name}_s": self.seconds,
            }
        )


def _scores(
    name: str,
    ids: Sequence[str],
    scores: Sequence[float],
    nbytes: Sequence[int] | None = None,
    seconds: Sequence[float] | None = None,
    note: str = "",
) -> ProxyScores:
    n = len(ids)
    return ProxyScores(
        name=name,
        candidate_ids=tuple(str(i) for i in ids),
        scores=np.asarray(scores, dtype=float),
        bytes=np.asarray(nbytes if nbytes is not None else [0] * n, dtype=np.int64),
        seconds=np.asarray(seconds if seconds is not None else [0.0] * n, dtype=float),
        note=note,
    )


def fedavg_after(
    curves: pd.DataFrame,
    *,
    rounds: int,
    replicate: int = 1,
    candidate_ids: Sequence[str] | None = None,
    name: str | None = None,
) -> ProxyScores:
    """Test accuracy of real FedAvg after ``rounds`` rounds, from replicate ``replicate``.

    Args:
        curves: The ground-truth curves table (candidate_id, replicate, round,
            test_accuracy, bytes_up, bytes_down, wall_s: the last three cumulative).
        rounds: Round to read.
        replicate: The replicate to read: not the truth's (0), so the proxy does not share
            the truth's seed luck.
        candidate_ids: Candidates in order (default: every candidate of the table, in order
            of first appearance).
        name: Proxy name (default ``fedavg_r<rounds>``).

    Raises:
        ConfigError: A candidate has no row at that round and replicate.
    """
    ids = list(candidate_ids) if candidate_ids is not None else list(curves["candidate_id"])
    ids = list(dict.fromkeys(str(i) for i in ids))
    at = curves[(curves["round"] == rounds) & (curves["replicate"] == replicate)]
    at = at.assign(candidate_id=at["candidate_id"].astype(str))
    rows = at.drop_duplicates("candidate_id").set_index("candidate_id")
    missing = [i for i in ids if i not in rows.index]
    if missing:
        raise ConfigError(
            f"the curves table has no row at round {rounds}, replicate {replicate} for "
            f"{len(missing)} candidate(s) (e.g. {missing[0]}); ask for rounds <= the table's "
            "rounds, or keep only candidates whose curves are complete"
        )
    sel = rows.loc[ids]
    return _scores(
        name or f"fedavg_r{rounds}",
        ids,
        sel["test_accuracy"].to_numpy(dtype=float),
        (sel["bytes_up"] + sel["bytes_down"]).to_numpy(dtype=np.int64),
        sel["wall_s"].to_numpy(dtype=float),
        note=f"real FedAvg, {rounds} round(s), replicate {replicate}",
    )


def parameter_count(candidates: pd.DataFrame, *, name: str = "param_count") -> ProxyScores:
    """Parameter count as the score (more parameters = predicted better); free.

    Args:
        candidates: The ground-truth candidates table (``candidate_id``, ``num_parameters``).
    """
    return _scores(
        name,
        candidates["candidate_id"].astype(str).tolist(),
        candidates["num_parameters"].to_numpy(dtype=float),
        note="parameter count (larger = better)",
    )


def naswot_score(model: nn.Module, images: torch.Tensor) -> float:
    """NASWOT's log|K| of ``model`` on one batch of ``images``.

    A forward hook on every activation module (ReLU, LeakyReLU, Sigmoid) records the binary
    code ``input > 0`` of each example over that module's units (for sigmoid, the sign of its
    pre-activation). With c the codes of all activation units, K[i, j] = number of units where
    examples i and j agree = N_units − Hamming(c_i, c_j), accumulated layer by layer as
    c cᵀ + (1 − c)(1 − c)ᵀ. The score is ``log|det K|`` (``numpy.linalg.slogdet``): higher
    means the network separates the examples' activation patterns better at initialisation.
    ``-inf`` for a singular K (two examples with identical codes) or a network without
    activation modules. The model runs as given (train mode: batch-norm uses batch statistics),
    without gradients.
    """
    n = int(images.shape[0])
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        code = (inputs[0] > 0).flatten(1).to(torch.float64)  # (n, units)
        kernel.add_(code @ code.T + (1.0 - code) @ (1.0 - code).T)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ACTIVATIONS)
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    if not handles:
        return -math.inf
    sign, logdet = np.linalg.slogdet(kernel.numpy())
    return float(logdet) if sign > 0 else -math.inf


def naswot(
    candidates: Sequence[Candidate],
    images: torch.Tensor,
    *,
    like: ImageDataset,
    seed: int,
    batch: int = NASWOT_BATCH,
    name: str = "naswot",
) -> ProxyScores:
    """NASWOT (:func:`naswot_score`) of every candidate at a seeded initialisation.

    Args:
        candidates: The candidates (their ``arch`` is what is scored).
        images: The batch source, e.g. the distilled images (the server holds them: free).
        like: Real-data metadata (input shape, classes).
        seed: Root seed: the batch (``batch`` of the images when there are more) and every
            model's initialisation (per ``candidate_id``) derive from it.
        batch: Images per batch.
    """
    if len(images) == 0 or batch < 1:
        raise ConfigError("NASWOT needs at least one image and batch >= 1")
    if len(images) > batch:
        chosen = np.sort(numpy_rng(seed, "naswot", "batch").choice(len(images), batch, False))
        images = images[torch.as_tensor(chosen, dtype=torch.long)]
    ids, scores, seconds = [], [], []
    for c in candidates:
        start = time.perf_counter()
        model = build_model(
            c.arch,
            input_shape=like.input_shape,
            num_classes=like.num_classes,
            seed=derive_seed(seed, "naswot", c.candidate_id),
        )
        scores.append(naswot_score(model, images))
        seconds.append(time.perf_counter() - start)
        ids.append(c.candidate_id)
    return _scores(name, ids, scores, None, seconds, note="NASWOT at init, distilled batch")


def _no_report(step: int, value: float) -> None:
    """A reporter that ignores intermediate values (no pruning in a proxy comparison)."""


def _ledger_bytes(scorer: ProxyScorer) -> int:
    if scorer.engine is None:
        return 0
    ledger = scorer.engine.ledger
    return int(ledger.bytes_up + ledger.bytes_down)


def distilled_proxy(
    candidates: Sequence[Candidate],
    scorer: ProxyScorer,
    *,
    epochs: int | None = None,
    name: str = "distdd",
    note: str = "DistDD proxy: trained on the distilled set",
) -> ProxyScores:
    """The product's proxy score of every candidate: ``scorer(candidate)`` as the search does.

    Args:
        candidates: The candidates; scores are labelled with their ``candidate_id``.
        scorer: A :class:`ProxyScorer` (its ``distilled`` set is the training set; with
            ``federated`` scoring its engine's ledger meters the bytes).
        epochs: Train this many epochs instead of each candidate's own ``train.epochs``
            (the candidate is rebuilt with that setting, so its training seeds differ).
        name: Proxy name.
    """
    ids, scores, nbytes, seconds = [], [], [], []
    for c in candidates:
        run = c if epochs is None else replace(c, train=replace(c.train, epochs=epochs))
        before, start = _ledger_bytes(scorer), time.perf_counter()
        scores.append(float(scorer(run, _no_report)))
        seconds.append(time.perf_counter() - start)
        nbytes.append(_ledger_bytes(scorer) - before)
        ids.append(c.candidate_id)
    return _scores(name, ids, scores, nbytes, seconds, note=note)


def random_real_set(train: ImageDataset, pool: np.ndarray, *, ipc: int, seed: int) -> DistilledSet:
    """``ipc`` random real images per class from ``pool`` (indices into ``train``) as a
    :class:`DistilledSet`, so :class:`ProxyScorer` trains on it unchanged. Centralized
    reference: real client images on the server (fewer where a class has fewer)."""
    if ipc < 1:
        raise ConfigError(f"ipc={ipc} is out of range; use ipc >= 1")
    images, labels = random_real_subset(
        train, np.asarray(pool), ipc=ipc, num_classes=train.num_classes, seed=seed
    )
    return DistilledSet(images, labels, train.num_classes)


def random_real_proxy(
    candidates: Sequence[Candidate],
    scorer: ProxyScorer,
    *,
    train: ImageDataset,
    pool: np.ndarray,
    ipc: int,
    seed: int,
    epochs: int | None = None,
    name: str = "random_real",
) -> ProxyScores:
    """:func:`distilled_proxy` with the distilled set swapped for :func:`random_real_set`.

    A **centralized reference, not a private method**: the subset is raw client data the
    server would not hold in DistDD. Same scoring (same engine and holdout), same training
    settings, same images per class; the subset is drawn from ``seed``.
    """
    real = random_real_set(train, pool, ipc=ipc, seed=seed)
    return distilled_proxy(
        candidates,
        replace(scorer, distilled=real),
        epochs=epochs,
        name=name,
        note="random real subset, same ipc (centralized reference, not private)",
    )


__all__ = [
    "ACTIVATIONS",
    "NASWOT_BATCH",
    "ProxyScores",
    "distilled_proxy",
    "fedavg_after",
    "naswot",
    "naswot_score",
    "parameter_count",
    "random_real_proxy",
    "random_real_set",
]
