"""FedAvg-based search, the baseline a user would otherwise run: real FedAvg per candidate.

:class:`FedAvgObjective` trains each candidate with real FedAvg on the study's engine and reports
the test accuracy after every round to the backend, so an Optuna pruner (successive halving,
Hyperband, median) can stop weak candidates early — the FL-HPO practice of budgeting rounds.
Every byte goes through the engine's ledger, pruned trials included (their spend travels with
:class:`~distdd_nas.search.backends.base.Pruned`).

:class:`CurveObjective` is the same search replayed on a ground-truth table: it reads each
candidate's per-round curve (accuracy, cumulative bytes and seconds) instead of training, so the
same backend, sampler and pruner make the same decisions in milliseconds per trial. Replaying a
real run's own seed reproduces its pruning decisions and therefore its bytes exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import optuna
import pandas as pd

from distdd_nas.data import ImageDataset
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg import FedAvgSettings, run_fedavg
from distdd_nas.federation import Engine
from distdd_nas.federation.quorum import DEFAULT_QUORUM, Quorum
from distdd_nas.search.backends.base import Pruned, Reporter
from distdd_nas.search.candidate import Candidate, CandidateFactory


def require_fedavg_search(*, backend: str, engine: str) -> None:
    """Where the FedAvg-based search can run: the Optuna backend (NNI would lose pruned trials'
    bytes) and the in-process engine (one fresh engine, and ledger, per trial).

    Raises:
        ConfigError: Another backend or engine; the message names the setting to change.
    """
    if backend != "optuna":
        raise ConfigError(
            "search.objective=fedavg runs on the Optuna backend only (it prices every pruned "
            'round); set search.backend = "optuna"'
        )
    if engine != "inprocess":
        raise ConfigError(
            "search.objective=fedavg trains in-process only so far (one engine per trial); "
            'set federation.engine = "inprocess"'
        )


class MissingCurve(LookupError):
    """A replayed search proposed a candidate the table has no full curve of.

    Not a :class:`~distdd_nas.errors.DistddError` on purpose: a backend records those as failed
    trials and goes on, while a replay outside its table is a mistake that must stop it.
    """


def _spend(
    candidate: Candidate, *, rounds: int, up: int, down: int, seconds: float
) -> dict[str, Any]:
    """The attributes every FedAvg-search trial stores (real or replayed alike)."""
    return {
        "candidate_id": candidate.candidate_id,
        "model": candidate.arch.short_name(),
        "rounds": rounds,
        "bytes_up": int(up),
        "bytes_down": int(down),
        "train_s": float(seconds),
    }


@dataclass(frozen=True)
class FedAvgObjective:
    """params → real FedAvg test accuracy after ``base.rounds`` rounds (pruned earlier maybe).

    Attributes:
        make_engine: A fresh engine over the study's clients per trial (its ledger = the
            trial's bytes).
        candidates: The study's candidate factory (the same networks validation trains).
        test: The server's test set, evaluated after every round.
        base: FedAvg settings; candidates' ``fedavg.*`` parameters override them.
        seed: FedAvg seed (model init, client sampling, local shuffling); the study seed, so a
            trial equals replicate 0 of the ground truth.
        quorum: Replies a round needs before it is retried or skipped.
    """

    make_engine: Callable[[], Engine]
    candidates: CandidateFactory
    test: ImageDataset
    base: FedAvgSettings
    seed: int
    quorum: Quorum = DEFAULT_QUORUM

    def __call__(
        self, params: Mapping[str, Any], report: Reporter
    ) -> tuple[float, dict[str, Any]]:
        candidate = self.candidates(params)
        settings = replace(candidate.fedavg_settings(self.base), eval_every=1)
        engine = self.make_engine()
        start = time.perf_counter()
        done = 0

        def on_round(row: dict[str, float]) -> None:
            nonlocal done
            done = int(row["round"])
            report(done, float(row["test_accuracy"]))

        try:
            result = run_fedavg(
                engine,
                arch=candidate.arch,
                test=self.test,
                settings=settings,
                seed=self.seed,
                on_round=on_round,
                quorum=self.quorum,
            )
        except optuna.TrialPruned as stop:
            ledger = engine.ledger
            attrs = _spend(
                candidate,
                rounds=done,
                up=ledger.bytes_up,
                down=ledger.bytes_down,
                seconds=time.perf_counter() - start,
            )
            raise Pruned(str(stop), attrs=attrs) from None
        finally:
            engine.close()
        ledger = engine.ledger
        attrs = _spend(
            candidate,
            rounds=result.rounds,
            up=ledger.bytes_up,
            down=ledger.bytes_down,
            seconds=result.wall_s,
        )
        return result.test_accuracy, attrs


@dataclass(frozen=True)
class CurveObjective:
    """The FedAvg-based search replayed on measured curves (no training).

    Attributes:
        curves: A ground-truth ``curves.csv`` frame (candidate_id, replicate, round,
            test_accuracy, cumulative bytes_up/bytes_down/wall_s).
        candidates: Maps a trial's params to its candidate (the study's factory, or a lookup
            into a ground-truth pool).
        replicate: Which seed's curve the search observes.
        rounds: Rounds of a full training (the pruner's maximum resource).
    """

    curves: pd.DataFrame
    candidates: Callable[[Mapping[str, Any]], Candidate]
    replicate: int
    rounds: int

    def curve(self, candidate_id: str) -> pd.DataFrame:
        """The candidate's curve for this replicate, rounds 1..``rounds`` in order.

        Raises:
            MissingCurve: The table has no full curve for it (a search outside the pool).
        """
        rows = self.curves[
            (self.curves["candidate_id"] == candidate_id)
            & (self.curves["replicate"] == self.replicate)
            & (self.curves["round"] <= self.rounds)
        ].sort_values("round")
        if rows["round"].tolist() != list(range(1, self.rounds + 1)):
            raise MissingCurve(
                f"the ground-truth table has no {self.rounds}-round curve of candidate "
                f"{candidate_id} (replicate {self.replicate}); replay only searches over the "
                "table's candidates"
            )
        return rows

    def __call__(
        self, params: Mapping[str, Any], report: Reporter
    ) -> tuple[float, dict[str, Any]]:
        candidate = self.candidates(params)
        curve = self.curve(candidate.candidate_id)
        for row in curve.itertuples(index=False):
            try:
                report(int(row.round), float(row.test_accuracy))
            except optuna.TrialPruned as stop:
                attrs = _spend(
                    candidate,
                    rounds=int(row.round),
                    up=int(row.bytes_up),
                    down=int(row.bytes_down),
                    seconds=float(row.wall_s),
                )
                raise Pruned(str(stop), attrs=attrs) from None
        last = curve.iloc[-1]
        attrs = _spend(
            candidate,
            rounds=self.rounds,
            up=int(last["bytes_up"]),
            down=int(last["bytes_down"]),
            seconds=float(last["wall_s"]),
        )
        return float(last["test_accuracy"]), attrs


__all__ = ["CurveObjective", "FedAvgObjective", "MissingCurve", "require_fedavg_search"]
