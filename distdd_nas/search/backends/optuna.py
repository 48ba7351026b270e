"""Optuna backend: ask/tell over a named storage, resumable and safe for several workers.

The study lives in a storage named by URL (SQLite by default, a journal file, or any
SQLAlchemy database: :mod:`.optuna_storage`); its sampler and pruner are chosen by name
(:mod:`.optuna_samplers`). Both modules' public names are re-exported here.

Guarantees, for one worker or several on the same study:

* the study stops at ``n_trials`` finished (COMPLETE or PRUNED) trials: a worker counts them,
  runs only the remainder, and a trial drawn beyond the target is marked FAIL (user attribute
  ``surplus``) without being evaluated;
* an interrupted trial is never lost: ``KeyboardInterrupt``/``SystemExit`` inside the objective
  marks it FAIL (``interrupted``) and enqueues its parameters again before re-raising; a trial
  left RUNNING by a worker process that died (``kill -9``) on this host is marked FAIL and
  re-enqueued when the next worker starts (so is a trial whose process died between asking for
  it and recording its worker). Completed trials are never evaluated again;
* the reference candidate is enqueued once, as the first trial of a new study;
* a candidate proposed again (samplers do that, above all on categorical spaces) is not trained
  again: the trial copies the score of its COMPLETE twin (user attribute ``duplicate_of``) at no
  cost, since the proxy is deterministic per candidate;
* samplers are seeded from the study seed, so a fresh study with the same seed proposes the same
  candidates; a resumed study seeds its sampler from the seed and the number of stored trials,
  so it does not replay the stream that proposed its first trials.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from distdd_nas.errors import ConfigError, DistddError
from distdd_nas.processes import pid_alive
from distdd_nas.search.backends.base import (
    EXTRA_COLUMNS,
    Objective,
    ObjectiveRecipe,
    TrialCallback,
    empty_trials_frame,
    order_columns,
)
from distdd_nas.search.backends.optuna_samplers import (
    PRUNERS,
    SAMPLERS,
    AskTellGridSampler,
    make_pruner,
    make_sampler,
)
from distdd_nas.search.backends.optuna_storage import make_storage
from distdd_nas.search.space import SearchSpace

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ALIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
#: Infeasible candidates are recorded as FAIL; after this many in a row the search stops.
MAX_CONSECUTIVE_FAILURES = 20
#: A RUNNING trial still without a worker after this long was orphaned by a dead process.
ORPHAN_GRACE_S = 1.0


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class OptunaBackend:
    """Ask/tell loop over an Optuna study (see the module docstring for the guarantees).

    Example:
        >>> from distdd_nas.search.space import SearchSpace
        >>> space = SearchSpace.from_dict(
        ...     {"params": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}})
        >>> backend = OptunaBackend(space=space, storage="sqlite:///:memory:",
        ...                         study_name="demo", sampler="random", seed=0)
        >>> table = backend.optimize(lambda p, r: (p["train.lr"], {}), n_trials=2)
        >>> list(table["state"])
        ['COMPLETE', 'COMPLETE']
    """

    name = "optuna"

    def __init__(
        self,
        *,
        space: SearchSpace,
        storage: str,
        study_name: str,
        sampler: str = "tpe",
        pruner: str = "none",
        seed: int = 0,
        reference: Mapping[str, Any] | None = None,
        catch: tuple[type[Exception], ...] = (DistddError,),
    ) -> None:
        self.space = space
        self.storage_url = storage
        self.sampler_name = sampler
        self.catch = catch
        self.study = optuna.create_study(
            storage=make_storage(storage),
            study_name=study_name,
            direction="maximize",
            sampler=make_sampler(sampler, seed=seed, space=space),
            pruner=make_pruner(pruner),
            load_if_exists=True,
        )
        self.seed = seed
        self._recover_dead_trials()
        point = space.point(reference) if reference else None
        if reference and point is None:
            log.warning(
                "the reference candidate %s is not a point of space %s; not enqueued",
                dict(reference),
                space.name,
            )
        if point is not None and not self.study.trials:
            self.study.enqueue_trial(point, user_attrs={"reference": True}, skip_if_exists=True)

    # -- recovery -------------------------------------------------------------------------------

    def _recover_dead_trials(self) -> None:
        """Fail RUNNING trials of dead workers and enqueue their parameters again.

        A trial's worker (``host:pid``) is stored right after ``ask``; it is dead when it is on
        this host and its process is gone. A RUNNING trial with no worker at all was orphaned
        between ``ask`` and that write (a live worker fills it in milliseconds): it is dead if
        it still has none after :data:`ORPHAN_GRACE_S` seconds.
        """
        host = socket.gethostname()
        orphans = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(trial.user_attrs.get("worker", ""))
            if not worker:
                orphans.append(trial.number)
                continue
            worker_host, _, pid = worker.rpartition(":")
            if worker_host != host or not pid.isdigit() or pid_alive(int(pid)):
                continue
            log.warning(
                "trial %d was left RUNNING by dead worker %s; re-queueing it", trial.number, worker
            )
            self._fail_and_requeue(trial, reason="worker died")
        if not orphans:
            return
        time.sleep(ORPHAN_GRACE_S)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in orphans and not trial.user_attrs.get("worker"):
                log.warning(
                    "trial %d has no worker; its process died after asking for it; re-queueing it",
                    trial.number,
                )
                self._fail_and_requeue(trial, reason="worker died")

    def _fail_and_requeue(self, trial: FrozenTrial, *, reason: str) -> None:
        self.study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        attrs = {k: v for k, v in trial.user_attrs.items() if k == "reference"}
        self.study.enqueue_trial(
            dict(trial.params), user_attrs={**attrs, "retry_of": trial.number}
        )

    # -- the loop -------------------------------------------------------------------------------

    def _position(self) -> int:
        """How many proposals the search has made, as an uninterrupted run counts them: every
        stored trial except queued ones, re-runs of interrupted trials and surplus ones."""
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.state != TrialState.WAITING
            and "retry_of" not in t.user_attrs
            and not t.user_attrs.get("surplus")
        )

    def _count(self, states: tuple[TrialState, ...]) -> int:
        return len(self.study.get_trials(deepcopy=False, states=states))

    def _target(self, n_trials: int) -> int:
        if self.sampler_name == "grid" and self.space.size < n_trials:
            log.warning(
                "grid sampler: space %s has %d points; running %d trials, not %d",
                self.space.name,
                int(self.space.size),
                int(self.space.size),
                n_trials,
            )
            return int(self.space.size)
        return n_trials

    def optimize(
        self,
        objective: Objective | ObjectiveRecipe,
        *,
        n_trials: int,
        timeout_s: float | None = None,
        callback: TrialCallback | None = None,
    ) -> pd.DataFrame:
        """Run trials until the study holds ``n_trials`` finished ones; return the trial table.

        Raises:
            ConfigError: ``n_trials`` < 1, or too many infeasible candidates in a row.
            Exception: Whatever the objective raises outside ``catch`` (after recording FAIL).
        """
        if n_trials < 1:
            raise ConfigError(f"n_trials={n_trials} is out of range; use an integer >= 1")
        fn = objective.build() if isinstance(objective, ObjectiveRecipe) else objective
        target = self._target(n_trials)
        distributions = self.space.to_optuna()
        start = time.monotonic()
        failures = 0
        while self._count(FINISHED) < target:
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                log.info("search timeout of %.0f s reached", timeout_s)
                break
            if self._count(ALIVE) >= target:
                break  # other workers are running the remainder
            # a fresh sampler per proposal, seeded by its position (see make_sampler)
            self.study.sampler = make_sampler(
                self.sampler_name, seed=self.seed, space=self.space, position=self._position()
            )
            trial = self.study.ask(distributions)
            trial.set_user_attr("worker", _worker_id())
            ahead = [
                t
                for t in self.study.get_trials(deepcopy=False, states=ALIVE)
                if t.number < trial.number
            ]
            if len(ahead) >= target:
                trial.set_user_attr("surplus", True)
                self.study.tell(trial, state=TrialState.FAIL)
                break
            state = self._run_trial(fn, trial)
            failures = failures + 1 if state == TrialState.FAIL else 0
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise ConfigError(
                    f"{failures} candidates in a row failed (see fail_reason in "
                    "the trial table); check that the search space fits the data"
                )
            if callback is not None:
                callback(self._row(self.study._storage.get_trial(trial._trial_id)))
        return self.trials_frame()

    def _completed_twin(self, trial: optuna.Trial) -> FrozenTrial | None:
        """An earlier COMPLETE trial with the same parameters (samplers re-propose points)."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.params == trial.params and t.number != trial.number:
                return t
        return None

    def _run_trial(self, fn: Objective, trial: optuna.Trial) -> TrialState:
        params = {**self.space.fixed, **trial.params}
        twin = self._completed_twin(trial)
        if twin is not None and twin.value is not None:
            # The proxy is deterministic per candidate: reuse the score, never re-evaluate.
            for key, attr in twin.user_attrs.items():
                if key not in ("worker", "reference", "retry_of"):
                    trial.set_user_attr(key, attr)
            trial.set_user_attr("duration_s", 0.0)
            trial.set_user_attr("bytes_down", 0)
            trial.set_user_attr("bytes_up", 0)
            trial.set_user_attr("duplicate_of", twin.number)
            self.study.tell(trial, twin.value)
            return TrialState.COMPLETE
        start = time.perf_counter()

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        try:
            value, attrs = fn(params, report)
        except optuna.TrialPruned as stop:
            for key, attr in getattr(stop, "attrs", {}).items():  # what it spent before the stop
                trial.set_user_attr(key, attr)
            trial.set_user_attr("duration_s", time.perf_counter() - start)
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        except self.catch as err:
            log.warning("trial %d failed: %s (params %s)", trial.number, err, trial.params)
            trial.set_user_attr("fail_reason", str(err)[:500])
            trial.set_user_attr("duration_s", time.perf_counter() - start)
            self.study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        except (KeyboardInterrupt, SystemExit):
            frozen = self.study._storage.get_trial(trial._trial_id)
            self._fail_and_requeue(frozen, reason="interrupted")
            raise
        except BaseException:
            trial.set_user_attr("duration_s", time.perf_counter() - start)
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        trial.set_user_attr("duration_s", time.perf_counter() - start)
        if not math.isfinite(value):
            trial.set_user_attr("fail_reason", f"objective returned {value}")
            self.study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        self.study.tell(trial, float(value))
        log.info("trial %d: %.4f %s", trial.number, value, trial.params)
        return TrialState.COMPLETE

    # -- the table ------------------------------------------------------------------------------

    def _row(self, t: FrozenTrial) -> dict[str, Any]:
        params = {**self.space.fixed, **t.params}
        a = t.user_attrs
        return {
            "number": t.number,
            "candidate_id": a.get("candidate_id", ""),
            "value": t.value if t.state == TrialState.COMPLETE else float("nan"),
            "state": t.state.name,
            "duration_s": float(a.get("duration_s", float("nan"))),
            "backend": self.name,
            **{f"params_{k}": v for k, v in sorted(params.items())},
            "reference": bool(a.get("reference", False)),
            "bytes_down": int(a.get("bytes_down", 0)),
            "bytes_up": int(a.get("bytes_up", 0)),
            "num_parameters": int(a.get("num_parameters", 0)),
            "model": str(a.get("model", "")),
            "fail_reason": str(a.get("fail_reason", "")),
            "surplus": bool(a.get("surplus", False)),
            "duplicate_of": int(a.get("duplicate_of", -1)),
            "rounds": int(a.get("rounds", 0)),  # FedAvg-based search: rounds this trial ran
        }

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: see :data:`~distdd_nas.search.backends.base.TRIAL_COLUMNS`."""
        rows = [self._row(t) for t in self.study.get_trials(deepcopy=False)]
        if not rows:
            return empty_trials_frame(self.space)
        frame = order_columns(pd.DataFrame(rows))
        for col in EXTRA_COLUMNS:
            assert col in frame.columns
        return frame


__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "AskTellGridSampler",
    "OptunaBackend",
    "make_pruner",
    "make_sampler",
    "make_storage",
]
