"""Search cost at equal quality, replayed on a ground-truth pool: what each way of picking an
FL architecture would have picked, and what it would have sent and spent.

Three searches over the same candidates, each observing the curves of replicate ``observe`` (the
searcher's own FedAvg runs) and judged by replicate ``truth`` at the final round (independent
seeds, so a search is not credited for the luck of the curve it saw):

* **random search with full FedAvg** — ``n`` distinct candidates in a seeded random order, each
  trained for every round; pick the best observed final accuracy;
* **successive halving / Hyperband on rounds** — the same order through Optuna's own pruner
  (:mod:`distdd_nas.search.backends.optuna_samplers`): each trial reports its accuracy after
  every round and stops when the pruner says so; pick the best completed trial. A pruned trial
  costs the bytes and seconds of the rounds it ran (read from its measured curve);
* **DistDD-NAS** — distil once (measured bytes and seconds, given), score every candidate on the
  distilled set (measured scoring bytes per candidate, given), train the proxy's top ``k`` with
  full FedAvg; pick the best observed of those.

Every method trains its pick for all rounds, so the final training counts on every side. Nothing
here estimates: bytes and seconds are sums of measured per-round costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from distdd_nas.errors import ConfigError
from distdd_nas.search.backends.optuna_samplers import make_pruner
from distdd_nas.search.candidate import Candidate
from distdd_nas.search.fedavg_objective import CurveObjective
from distdd_nas.seeding import derive_seed, numpy_rng


@dataclass(frozen=True)
class Pool:
    """A ground-truth pool: per-round curves and the candidates they belong to.

    Attributes:
        curves: ``curves.csv`` rows (candidate_id, replicate, round, test_accuracy, cumulative
            bytes_up, bytes_down, wall_s).
        candidates: candidate_id → Candidate (how a replayed trial names its candidate).
        rounds: Rounds of a full training (R).
        observe: The replicate searches see; ``truth``: the replicate they are judged by.
    """

    curves: pd.DataFrame
    candidates: Mapping[str, Candidate]
    rounds: int
    observe: int = 1
    truth: int = 0

    def final(self, replicate: int) -> pd.DataFrame:
        """Per candidate at round R of ``replicate``: accuracy, bytes (up + down), seconds."""
        last = self.curves[
            (self.curves["replicate"] == replicate) & (self.curves["round"] == self.rounds)
        ].set_index("candidate_id")
        return pd.DataFrame(
            {
                "accuracy": last["test_accuracy"],
                "bytes": last["bytes_up"] + last["bytes_down"],
                "seconds": last["wall_s"],
            }
        )


@dataclass(frozen=True)
class Outcome:
    """One search of one repetition: what it picked, how good that is, what it cost."""

    method: str
    repetition: int
    picked: str
    truth: float
    best_truth: float
    bytes: float
    seconds: float
    trained: int

    @property
    def regret(self) -> float:
        """Best truth in the searched candidates minus the pick's truth (0 = found the best)."""
        return self.best_truth - self.truth


def _lookup(pool: Pool) -> Any:
    def candidate(params: Mapping[str, Any]) -> Candidate:
        return pool.candidates[str(params["candidate"])]

    return candidate


def pruned_search(pool: Pool, order: Sequence[str], *, pruner: str, seed: int) -> pd.DataFrame:
    """Optuna over ``order`` (enqueued, so distinct candidates in that order) with ``pruner``
    on rounds, replayed on the observed curves. One row per trial: candidate_id, state,
    value, rounds, bytes, seconds."""
    objective = CurveObjective(
        curves=pool.curves, candidates=_lookup(pool), replicate=pool.observe, rounds=pool.rounds
    )
    study = optuna.create_study(
        study_name=f"replay-{seed}",  # Hyperband assigns brackets by hashing the study name
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=derive_seed(seed, "sampler") % 2**32),
        pruner=make_pruner(pruner),
    )
    rows = []
    for cid in order:
        study.enqueue_trial({"candidate": cid})
        trial = study.ask()
        trial.suggest_categorical("candidate", list(order))

        def report(step: int, value: float, trial: optuna.Trial = trial) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at round {step}")

        try:
            value, attrs = objective(trial.params, report)
            study.tell(trial, value)
            state = "COMPLETE"
        except optuna.TrialPruned as stop:
            attrs, value, state = getattr(stop, "attrs", {}), float("nan"), "PRUNED"
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        rows.append(
            {
                "candidate_id": cid,
                "state": state,
                "value": value,
                "rounds": int(attrs["rounds"]),
                "bytes": int(attrs["bytes_up"]) + int(attrs["bytes_down"]),
                "seconds": float(attrs["train_s"]),
            }
        )
    return pd.DataFrame(rows)


def distdd_pick(
    pool: Pool,
    ids: Sequence[str],
    *,
    scores: Mapping[str, float],
    scoring_bytes: Mapping[str, float],
    scoring_seconds: Mapping[str, float],
    top_k: int,
    distill_bytes: float,
    distill_seconds: float,
) -> tuple[str, float, float, int]:
    """DistDD-NAS over ``ids``: (pick, bytes, seconds, candidates trained with FedAvg)."""
    ranked = sorted(ids, key=lambda c: (-float(scores[c]), list(ids).index(c)))
    top = ranked[:top_k]
    observed = pool.final(pool.observe).loc[top]
    pick = str(observed["accuracy"].idxmax())
    spent = distill_bytes + sum(float(scoring_bytes[c]) for c in ids)
    took = distill_seconds + sum(float(scoring_seconds[c]) for c in ids)
    return (
        pick,
        spent + float(observed["bytes"].sum()),
        took + float(observed["seconds"].sum()),
        len(top),
    )


def compare_searches(
    pool: Pool,
    *,
    size: int,
    repetitions: int,
    seed: int,
    random_budget: int,
    distdd: Mapping[str, Any],
    pruners: Sequence[str] = ("successive_halving", "hyperband"),
) -> list[Outcome]:
    """Every method on ``repetitions`` seeded sub-pools of ``size`` candidates (drawn in the
    order of ``pool.candidates``, so the same for any renaming of the candidates).

    ``distdd`` holds the DistDD-NAS inputs of :func:`distdd_pick` (scores, scoring_bytes,
    scoring_seconds, top_k, distill_bytes, distill_seconds).

    Raises:
        ConfigError: ``size`` larger than the pool, or ``random_budget`` larger than ``size``.
    """
    # Sub-pools are drawn in the pool's own candidate order (the table's), not by id: ids hash
    # the proxy's settings, so replays of one table under two proxy settings get the same
    # sub-pools and their outcomes pair up.
    both = set(pool.final(pool.truth).index) & set(pool.final(pool.observe).index)
    ids = [c for c in pool.candidates if c in both]
    if not 1 <= random_budget <= size <= len(ids):
        raise ConfigError(
            f"need 1 <= random_budget ({random_budget}) <= size ({size}) <= pool ({len(ids)}); "
            "shrink the sub-pool or the budget"
        )
    truth = pool.final(pool.truth)["accuracy"]
    observed = pool.final(pool.observe)
    out: list[Outcome] = []
    for rep in range(repetitions):
        rng = numpy_rng(seed, "search_cost", rep)
        sub = [ids[i] for i in rng.permutation(len(ids))[:size]]
        best = float(truth.loc[sub].max())

        def outcome(
            method: str,
            pick: str,
            spent: float,
            took: float,
            n: int,
            rep: int = rep,
            best: float = best,
        ) -> Outcome:
            return Outcome(method, rep, pick, float(truth.loc[pick]), best, spent, took, n)

        tried = sub[:random_budget]
        chosen = observed.loc[tried]
        out.append(
            outcome(
                f"random search, full FedAvg ({random_budget} candidates)",
                str(chosen["accuracy"].idxmax()),
                float(chosen["bytes"].sum()),
                float(chosen["seconds"].sum()),
                len(tried),
            )
        )
        for pruner in pruners:
            trials = pruned_search(pool, sub, pruner=pruner, seed=derive_seed(seed, rep))
            done = trials[trials["state"] == "COMPLETE"]
            pick = str(done.loc[done["value"].idxmax(), "candidate_id"])
            out.append(
                outcome(
                    f"FedAvg + {pruner.replace('_', ' ')} ({size} candidates)",
                    pick,
                    float(trials["bytes"].sum()),
                    float(trials["seconds"].sum()),
                    len(trials),
                )
            )
        pick, spent, took, n = distdd_pick(pool, sub, **distdd)
        out.append(outcome(f"DistDD-NAS (proxy on {size}, top {n} FedAvg)", pick, spent, took, n))
    return out


def summarise(outcomes: Sequence[Outcome], *, level: float = 0.9) -> pd.DataFrame:
    """Per method: mean pick accuracy, mean regret with a percentile interval over repetitions,
    how often it found the sub-pool's best, mean bytes and seconds."""
    frame = pd.DataFrame(
        [{**o.__dict__, "regret": o.regret, "found_best": o.regret <= 0.0} for o in outcomes]
    )
    lo, hi = (1 - level) / 2, (1 + level) / 2
    rows = []
    for method, g in frame.groupby("method", sort=False):
        rows.append(
            {
                "method": method,
                "repetitions": len(g),
                "pick_accuracy": float(g["truth"].mean()),
                "regret_mean": float(g["regret"].mean()),
                "regret_low": float(np.quantile(g["regret"], lo)),
                "regret_high": float(np.quantile(g["regret"], hi)),
                "found_best": float(g["found_best"].mean()),
                "bytes_mean": float(g["bytes"].mean()),
                "seconds_mean": float(g["seconds"].mean()),
                "trained_mean": float(g["trained"].mean()),
            }
        )
    return pd.DataFrame(rows)


__all__ = ["Outcome", "Pool", "compare_searches", "distdd_pick", "pruned_search", "summarise"]
