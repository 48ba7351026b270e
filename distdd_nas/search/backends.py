"""The search-backend interface, its trial table, and the keyword-only backend factory.

A backend runs trials of an :data:`Objective` over a :class:`SearchSpace` until the study holds
``n_trials`` finished (COMPLETE or PRUNED) trials, and returns the study's trial table. Both
implementations — :class:`~distdd_nas.search.optuna_backend.OptunaBackend` (in-process ask/tell
over a persistent storage) and :class:`~distdd_nas.search.nni_backend.NniBackend` (an NNI
experiment whose trials are subprocesses) — fill the same columns and pass one contract suite
(``tests/search/test_backend_contract.py``).

Contract of :meth:`SearchBackend.optimize`:

* Resumable: calling it again on the same storage/workdir continues the study; completed trials
  are never evaluated again and never lost; only the remainder up to ``n_trials`` runs.
* The reference candidate (if given and inside the space) is the study's first trial, once.
* Trials whose objective raises a :class:`~distdd_nas.errors.DistddError` (an infeasible
  candidate, e.g. too many pooling layers for the input) are recorded as FAIL and the search goes
  on; any other exception is recorded as FAIL and re-raised.
* ``value`` is the proxy score (higher is better) of COMPLETE trials and NaN otherwise.

Objectives that must cross a process boundary (NNI trials, extra Optuna workers) are passed as an
:class:`ObjectiveRecipe`: the import path of a factory plus JSON keyword arguments (file paths,
numbers), never tensors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
import pandas as pd

from distdd_nas.errors import ConfigError
from distdd_nas.search.space import SearchSpace

#: Called with (step, intermediate value, higher is better); raises :class:`Pruned` to stop.
Reporter = Callable[[int, float], None]

#: Evaluates one parameter dict (``group.field`` names, fixed values included) and returns the
#: proxy score plus attributes stored with the trial (``candidate_id``, ``bytes_down``, …).
Objective = Callable[[Mapping[str, Any], Reporter], tuple[float, dict[str, Any]]]

#: Called after each finished trial with its table row (progress bars).
TrialCallback = Callable[[dict[str, Any]], None]

#: Columns every backend's trial table has, in this order, before ``params_*`` and extras.
TRIAL_COLUMNS = ("number", "candidate_id", "value", "state", "duration_s", "backend")
#: Extra columns both backends fill (0/False when not applicable).
EXTRA_COLUMNS = ("reference", "bytes_down", "bytes_up", "num_parameters", "model")
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
FINISHED_STATES = ("COMPLETE", "PRUNED")
BACKENDS = ("optuna", "nni")


class Pruned(optuna.TrialPruned):
    """Raised by a :data:`Reporter` when the backend's pruner stops a trial."""


@dataclass(frozen=True)
class ObjectiveRecipe:
    """A portable objective: ``factory`` (``"package.module:function"``) called with ``kwargs``.

    The factory returns an :data:`Objective`. Keyword arguments must be JSON values (paths,
    numbers, strings): a recipe is written to a JSON file and rebuilt in another process.
    """

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Objective:
        """Import the factory and call it.

        Raises:
            ConfigError: The factory cannot be imported.
        """
        module, sep, attr = self.factory.partition(":")
        if not sep or not module or not attr:
            raise ConfigError(f"objective factory {self.factory!r} is malformed; write "
                              "'package.module:function'")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot import objective factory {self.factory!r} ({err}); check "
                              "that the package is installed in this interpreter") from None
        objective: Objective = fn(**dict(self.kwargs))
        return objective

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectiveRecipe:
        return cls(factory=str(data["factory"]), kwargs=dict(data.get("kwargs", {})))


class SearchBackend(Protocol):
    """Runs a study to ``n_trials`` finished trials; resumable (see the module docstring)."""

    name: str

    def optimize(
        self,
        objective: Objective | ObjectiveRecipe,
        *,
        n_trials: int,
        timeout_s: float | None = None,
        callback: TrialCallback | None = None,
    ) -> pd.DataFrame:
        """Run trials until ``n_trials`` are finished (or ``timeout_s`` passed); return the
        trial table of the whole study (all states)."""
        ...

    def trials_frame(self) -> pd.DataFrame:
        """The trial table of the study as stored now (no trial is run)."""
        ...


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Trial-table columns in the canonical order: :data:`TRIAL_COLUMNS`, ``params_*``, extras."""
    params = sorted(c for c in frame.columns if str(c).startswith("params_"))
    head = [c for c in TRIAL_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in head and c not in params]
    return frame[[*head, *params, *rest]]


def empty_trials_frame(space: SearchSpace) -> pd.DataFrame:
    """A trial table with no rows but every column (a study that has not run yet)."""
    names = sorted({*space.fixed, *space.names})
    columns = [*TRIAL_COLUMNS, *(f"params_{n}" for n in names), *EXTRA_COLUMNS]
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def check_backend(name: str) -> None:
    """Raise ConfigError unless ``name`` is a known backend."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown search backend {name!r}; choose one of {', '.join(BACKENDS)}")


def create_backend(
    name: str,
    *,
    space: SearchSpace,
    storage: str | None,
    study_name: str,
    sampler: str = "tpe",
    pruner: str = "none",
    seed: int = 0,
    workdir: str | Path,
    reference: Mapping[str, Any] | None = None,
    trial_timeout_s: float | None = None,
    concurrency: int = 1,
) -> SearchBackend:
    """The search backend ``name`` (``optuna`` or ``nni``) for one study.

    Args:
        name: ``optuna`` or ``nni``.
        space: What to search.
        storage: Optuna storage URL (``sqlite:///…``, ``journal:///…``, any SQLAlchemy URL);
            ``None`` means ``sqlite:///<workdir>/optuna.db``. Ignored by NNI, which keeps its
            state in ``workdir``.
        study_name: Names the Optuna study / NNI experiment (one per search fingerprint).
        sampler: ``tpe``, ``random``, ``grid``, ``cmaes``, ``gp`` (Optuna) or ``tpe``,
            ``random``, ``grid``, ``evolution`` (NNI).
        pruner: ``median``, ``hyperband`` or ``none`` (NNI: ``median`` = Medianstop assessor).
        seed: Study seed; samplers/tuners are seeded from it.
        workdir: The search directory of the run (NNI experiment directory lives under it).
        reference: The reference candidate as searched-parameter values, enqueued first.
        trial_timeout_s: NNI only: maximum duration of one trial.
        concurrency: NNI only: trials run at once (1 keeps a seeded tuner reproducible; more
            overlaps the trial processes' start-up, a few seconds each).

    Raises:
        ConfigError: Unknown backend, sampler or pruner for that backend, or bad storage URL.
        MissingDependencyError: NNI backend without the ``nni`` extra.
    """
    check_backend(name)
    workdir = Path(workdir)
    if name == "optuna":
        from distdd_nas.search.optuna_backend import OptunaBackend

        url = storage or f"sqlite:///{(workdir / 'optuna.db').resolve()}"
        return OptunaBackend(space=space, storage=url, study_name=study_name, sampler=sampler,
                             pruner=pruner, seed=seed, reference=reference)
    from distdd_nas.search.nni_backend import NniBackend

    return NniBackend(space=space, workdir=workdir / "nni", tuner=sampler, pruner=pruner,
                      seed=seed, study_name=study_name, reference=reference,
                      trial_timeout_s=trial_timeout_s, concurrency=concurrency)


__all__ = [
    "BACKENDS",
    "EXTRA_COLUMNS",
    "FINISHED_STATES",
    "TRIAL_COLUMNS",
    "Objective",
    "ObjectiveRecipe",
    "Pruned",
    "Reporter",
    "SearchBackend",
    "TrialCallback",
    "check_backend",
    "create_backend",
    "empty_trials_frame",
    "order_columns",
]
