"""NNI backend: an NNI 3.0 ``Experiment('local')`` whose trials run the same proxy objective.

How a search runs (all state under ``workdir``, normally ``runs/<study>/search/nni/``):

1. Result records of earlier runs are read from ``workdir/results``; finished trials count
   towards ``n_trials`` and are replayed into the tuner (resume), records left RUNNING by a
   killed run become FAIL.
2. The backend writes ``spec-<n>.json`` (objective recipe, fixed parameters, reference, result
   directory, trial-number offset) and starts an experiment with ``max_trial_number`` = the
   remainder, the trial command ``python -m distdd_nas.search.backends.nni_trial --spec …``,
   the tuner :class:`~distdd_nas.search.backends.nni_tuner.ReferenceFirstTuner` (TPE, Random,
   GridSearch or Evolution inside; see ``TUNERS``), optionally the Medianstop assessor (see
   :data:`PRUNERS`), its experiment directory under
   ``workdir/experiments`` and its web port picked free on 127.0.0.1.
3. It polls until the experiment is done (or the timeout passes), then **always** stops it
   (``try/finally``) and kills whatever is left of the NNI manager's process tree by PID.
4. If infeasible candidates failed, it starts another experiment for the remainder (at most
   ``max_experiments`` in all).

NNI 3.0 registers every experiment in ``~/nni-experiments/.experiment`` (not configurable);
the backend removes its entry after stopping the experiment unless ``keep_registry=True`` (to
browse it later with ``nnictl view``), so nothing of a search stays outside ``workdir``.
Objectives must be :class:`~distdd_nas.search.backends.base.ObjectiveRecipe` s: trials are separate
processes.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from distdd_nas.errors import ConfigError, MissingDependencyError
from distdd_nas.processes import free_port, kill_tree
from distdd_nas.search.backends.base import (
    FINISHED_STATES,
    Objective,
    ObjectiveRecipe,
    TrialCallback,
    empty_trials_frame,
    order_columns,
)
from distdd_nas.search.backends.nni_tuner import TUNERS
from distdd_nas.search.space import SearchSpace
from distdd_nas.seeding import derive_seed

log = logging.getLogger(__name__)

#: What NNI runs: the trial command's module and the tuner class, by import path.
TRIAL_MODULE = "distdd_nas.search.backends.nni_trial"
TUNER_CLASS = "distdd_nas.search.backends.nni_tuner.ReferenceFirstTuner"
_TERMINAL = ("DONE", "STOPPED", "ERROR")
_NO_MORE = ("NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL")
_JOB_STATE = {"EARLY_STOPPED": "PRUNED", "SUCCEEDED": "COMPLETE"}


def _medianstop() -> Any:
    from nni.experiment import AlgorithmConfig

    return AlgorithmConfig(
        name="Medianstop", class_args={"optimize_mode": "maximize", "start_step": 2}
    )


#: NNI assessors by name (``search.pruner`` with the NNI backend): factory() → the experiment's
#: ``assessor`` config (``median`` = NNI's Medianstop; ``none`` = no assessor).
PRUNERS: dict[str, Callable[[], Any]] = {"median": _medianstop, "none": lambda: None}


def _require_nni() -> None:
    try:
        import nni  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "the NNI backend needs the nni extra; pip install -e "
            "'.[nni]' (nni==3.0, setuptools<81), or use "
            'search.backend = "optuna"'
        ) from None


class NniBackend:
    """Runs a search as NNI experiments (see the module docstring).

    Args:
        space: What to search (converted with :meth:`SearchSpace.to_nni`).
        workdir: The backend's directory (results, specs, NNI experiment directories).
        tuner: ``tpe``, ``random``, ``grid`` or ``evolution`` (NNI built-ins).
        pruner: ``median`` (NNI's Medianstop assessor on the intermediate values) or ``none``.
        seed: Study seed (TPE and Random tuners are seeded from it; Evolution is not seedable).
        study_name: The experiments' name.
        reference: The reference candidate (searched-parameter values), proposed first once.
        trial_timeout_s: NNI's ``max_trial_duration``.
        max_experiments: Experiments started per :meth:`optimize` call to replace failed trials.
        poll_s: Seconds between status polls.
        concurrency: Trials at once (see :func:`~distdd_nas.search.backends.create_backend`).
        keep_registry: Keep the experiments in NNI's home-directory registry.

    Raises:
        ConfigError: Unknown tuner or pruner, or concurrency < 1.
        MissingDependencyError: ``nni`` is not installed.
    """

    name = "nni"

    def __init__(
        self,
        *,
        space: SearchSpace,
        workdir: str | Path,
        tuner: str = "tpe",
        pruner: str = "none",
        seed: int = 0,
        study_name: str = "distdd-nas",
        reference: Mapping[str, Any] | None = None,
        trial_timeout_s: float | None = None,
        max_experiments: int = 3,
        poll_s: float = 0.5,
        concurrency: int = 1,
        keep_registry: bool = False,
    ) -> None:
        if tuner not in TUNERS:
            raise ConfigError(
                f"sampler {tuner!r} is not available with the NNI backend; choose "
                f"one of {', '.join(TUNERS)}"
            )
        if pruner not in PRUNERS:
            raise ConfigError(
                f"pruner {pruner!r} is not available with the NNI backend; choose "
                f"one of {', '.join(PRUNERS)} (median = NNI's Medianstop)"
            )
        _require_nni()
        self.space = space
        self.workdir = Path(workdir).resolve()
        self.tuner = tuner
        self.pruner = pruner
        self.seed = seed
        self.study_name = study_name
        self.reference = space.point(reference) if reference else None
        if reference and self.reference is None:
            log.warning(
                "the reference candidate %s is not a point of space %s; not enqueued",
                dict(reference),
                space.name,
            )
        self.trial_timeout_s = trial_timeout_s
        self.max_experiments = max_experiments
        self.poll_s = poll_s
        if concurrency < 1:
            raise ConfigError(f"concurrency={concurrency} is out of range; use an integer >= 1")
        self.concurrency = concurrency
        self.keep_registry = keep_registry
        self.results = self.workdir / "results"

    # -- records --------------------------------------------------------------------------------

    def _records(self) -> list[dict[str, Any]]:
        if not self.results.is_dir():
            return []
        out = []
        for path in sorted(self.results.glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                log.warning("ignoring unreadable trial record %s", path)
        return sorted(out, key=lambda r: int(r["number"]))

    def _settle(self, states: Mapping[str, str]) -> None:
        """Records still RUNNING: PRUNED if NNI early-stopped the job, else FAIL."""
        for path in sorted(self.results.glob("*.json")) if self.results.is_dir() else []:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("state") != "RUNNING":
                continue
            job = states.get(str(record.get("trial_job_id")), "")
            record["state"] = "PRUNED" if job == "EARLY_STOPPED" else "FAIL"
            record.setdefault("fail_reason", f"trial ended without result (NNI: {job or '?'})")
            from distdd_nas.search.backends.nni_trial import write_record

            write_record(path, record)

    def _finished(self) -> list[dict[str, Any]]:
        return [r for r in self._records() if r.get("state") in FINISHED_STATES]

    # -- the loop -------------------------------------------------------------------------------

    def optimize(
        self,
        objective: Objective | ObjectiveRecipe,
        *,
        n_trials: int,
        timeout_s: float | None = None,
        callback: TrialCallback | None = None,
    ) -> pd.DataFrame:
        """Run NNI experiments until ``n_trials`` trials are finished; return the trial table.

        Raises:
            ConfigError: ``objective`` is not an :class:`ObjectiveRecipe`, or ``n_trials`` < 1.
        """
        if not isinstance(objective, ObjectiveRecipe):
            raise ConfigError(
                "the NNI backend runs trials in separate processes; pass an "
                "ObjectiveRecipe (e.g. from search.objective.save_proxy_inputs), "
                "not a Python callable"
            )
        if n_trials < 1:
            raise ConfigError(f"n_trials={n_trials} is out of range; use an integer >= 1")
        self.results.mkdir(parents=True, exist_ok=True)
        self._settle({})  # a killed earlier run may have left RUNNING records
        target = n_trials
        if self.tuner == "grid" and self.space.size < n_trials:
            target = int(self.space.size)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for _ in range(self.max_experiments):
            done = self._finished()
            if len(done) >= target:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._run_experiment(
                objective, remaining=target - len(done), deadline=deadline, callback=callback
            )
        return self.trials_frame()

    def _spec(self, objective: ObjectiveRecipe, *, reference_pending: bool) -> Path:
        records = self._records()
        offset = max((int(r["number"]) for r in records), default=-1) + 1
        spec = {
            "objective": objective.to_dict(),
            "fixed": dict(self.space.fixed),
            "reference": self.reference if reference_pending else None,
            "results": str(self.results),
            "offset": offset,
        }
        path = self.workdir / f"spec-{offset:05d}.json"
        path.write_text(json.dumps(spec, indent=1, sort_keys=True), encoding="utf-8")
        return path

    def _experiment(self, spec: Path, *, remaining: int, reference_pending: bool) -> Any:
        from nni.experiment import CustomAlgorithmConfig, Experiment

        history = [
            {"parameter": r["params"], "value": float(r["value"])}
            for r in self._finished()
            if r.get("state") == "COMPLETE"
        ]
        exp = Experiment("local")
        c = exp.config
        c.experiment_name = self.study_name
        c.trial_command = (
            f"{shlex.quote(sys.executable)} -m {TRIAL_MODULE} --spec {shlex.quote(str(spec))}"
        )
        c.trial_code_directory = str(self.workdir)
        c.trial_concurrency = min(self.concurrency, remaining)
        c.max_trial_number = remaining
        if self.trial_timeout_s is not None:
            c.max_trial_duration = f"{max(1, math.ceil(self.trial_timeout_s))}s"
        c.search_space = self.space.to_nni()
        c.experiment_working_directory = str(self.workdir / "experiments")
        c.nni_manager_ip = "127.0.0.1"
        c.log_level = "warning"
        c.tuner = CustomAlgorithmConfig(
            class_name=TUNER_CLASS,
            code_directory=str(self.workdir),
            class_args={
                "algorithm": self.tuner,
                "seed": derive_seed(self.seed, "nni", "tuner", len(history)) % 2**31,
                "reference": self.reference if reference_pending else None,
                "history": history,
            },
        )
        c.assessor = PRUNERS[self.pruner]()
        c.training_service.use_active_gpu = False
        return exp

    def _run_experiment(
        self,
        objective: ObjectiveRecipe,
        *,
        remaining: int,
        deadline: float | None,
        callback: TrialCallback | None,
    ) -> None:
        from nni.experiment import RunMode

        pending = self.reference is not None and not any(
            r.get("reference") and r.get("state") in FINISHED_STATES for r in self._records()
        )
        spec = self._spec(objective, reference_pending=pending)
        exp = self._experiment(spec, remaining=remaining, reference_pending=pending)
        (self.workdir / "experiments").mkdir(parents=True, exist_ok=True)
        pid: int | None = None
        states: dict[str, str] = {}
        seen = {json.dumps(r, sort_keys=True) for r in self._finished()}
        try:
            exp.start(port=free_port(), debug=False, run_mode=RunMode.Background)
            pid = exp._proc.pid if exp._proc is not None else None
            log.info("NNI experiment %s started (manager pid %s, port %s)", exp.id, pid, exp.port)
            while True:
                status = exp.get_status()
                jobs = exp.list_trial_jobs()
                states = {j.trialJobId: j.status for j in jobs}
                if callback is not None:
                    seen = self._notify(callback, seen)
                busy = any(s in ("RUNNING", "WAITING") for s in states.values())
                if status in _TERMINAL or (status in _NO_MORE and not busy):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    log.warning("search timeout reached; stopping NNI experiment %s", exp.id)
                    break
                time.sleep(self.poll_s)
        finally:
            try:
                exp.stop()
            except Exception as err:  # the manager may be gone already
                log.warning("stopping NNI experiment %s failed: %s", exp.id, err)
            if pid is not None:
                kill_tree(pid)
            self._forget(exp.id)
            self._settle(states)
        if callback is not None:
            self._notify(callback, seen)

    def _forget(self, experiment_id: str) -> None:
        """Drop the experiment from NNI's registry in ``~/nni-experiments/.experiment``.

        Its files stay in ``workdir/experiments/<id>`` and the search resumes from the result
        records, so the home-directory registry would only collect stale entries.
        """
        if not self.keep_registry:
            from nni.tools.nnictl.config_utils import Experiments

            try:
                Experiments().remove_experiment(experiment_id)
            except Exception as err:  # a registry problem must not fail a finished search
                log.warning(
                    "could not drop experiment %s from NNI's registry: %s", experiment_id, err
                )

    def _notify(self, callback: TrialCallback, seen: set[str]) -> set[str]:
        for record in self._finished():
            key = json.dumps(record, sort_keys=True)
            if key not in seen:
                seen.add(key)
                callback(self._row(record))
        return seen

    # -- the table ------------------------------------------------------------------------------

    def _row(self, r: Mapping[str, Any]) -> dict[str, Any]:
        attrs = r.get("attrs") or {}
        params = {**self.space.fixed, **r.get("params", {})}
        value = r.get("value")
        return {
            "number": int(r["number"]),
            "candidate_id": attrs.get("candidate_id", ""),
            "value": float(value)
            if r.get("state") == "COMPLETE" and value is not None
            else float("nan"),
            "state": r.get("state", "FAIL"),
            "duration_s": float(r.get("duration_s", float("nan"))),
            "backend": self.name,
            **{f"params_{k}": v for k, v in sorted(params.items())},
            "reference": bool(r.get("reference", False)),
            "bytes_down": int(attrs.get("bytes_down", 0)),
            "bytes_up": int(attrs.get("bytes_up", 0)),
            "num_parameters": int(attrs.get("num_parameters", 0)),
            "model": str(attrs.get("model", "")),
            "fail_reason": str(r.get("fail_reason", "")),
            "experiment_id": str(r.get("experiment_id", "")),
            "trial_job_id": str(r.get("trial_job_id", "")),
        }

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial record (see :data:`.base.TRIAL_COLUMNS`)."""
        rows = [self._row(r) for r in self._records()]
        if not rows:
            return empty_trials_frame(self.space)
        return order_columns(pd.DataFrame(rows))


__all__ = ["PRUNERS", "TUNERS", "NniBackend"]
