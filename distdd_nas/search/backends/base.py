"""What every search backend shares: the :class:`SearchBackend` protocol, the trial table.

A backend runs trials of an :data:`Objective` over a :class:`SearchSpace` until the study holds
``n_trials`` finished (COMPLETE or PRUNED) trials, and returns the study's trial table. Both
implementations — :class:`~distdd_nas.search.backends.optuna.OptunaBackend` (in-process ask/tell
over a persistent storage) and :class:`~distdd_nas.search.backends.nni.NniBackend` (an NNI
experiment whose trials are subprocesses) — import this module (it imports no backend), fill
the same columns and pass one contract suite (``tests/search/test_backend_contract.py``).
Backends are created by name with :func:`distdd_nas.search.backends.create_backend`;
their contract is the docstring of :class:`SearchBackend`.

Objectives that must cross a process boundary (NNI trials, extra Optuna workers) are passed as an
:class:`ObjectiveRecipe`: the import path of a factory plus JSON keyword arguments (file paths,
numbers), never tensors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


class Pruned(optuna.TrialPruned):
    """Raised by a :data:`Reporter` when the backend's pruner stops a trial.

    An objective that spent measurable resources before it was stopped (a FedAvg-based search
    pays for every round it ran) re-raises it with ``attrs`` (``bytes_up``, ``bytes_down``,
    ``rounds``, …); backends store them with the pruned trial, so no byte goes unpriced.
    """

    def __init__(self, message: str = "", *, attrs: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.attrs: dict[str, Any] = dict(attrs or {})


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
            raise ConfigError(
                f"objective factory {self.factory!r} is malformed; write 'package.module:function'"
            )
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"cannot import objective factory {self.factory!r} ({err}); check "
                "that the package is installed in this interpreter"
            ) from None
        objective: Objective = fn(**dict(self.kwargs))
        return objective

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectiveRecipe:
        return cls(factory=str(data["factory"]), kwargs=dict(data.get("kwargs", {})))


class SearchBackend(Protocol):
    """Runs a study to ``n_trials`` finished trials; every backend keeps this contract.

    Contract of :meth:`optimize`:

    * Resumable: calling it again on the same storage/workdir continues the study; completed
      trials are never evaluated again and never lost; only the remainder up to ``n_trials``
      runs.
    * The reference candidate (if given and inside the space) is the study's first trial, once.
    * Trials whose objective raises a :class:`~distdd_nas.errors.DistddError` (an infeasible
      candidate, e.g. too many pooling layers for the input) are recorded as FAIL and the search
      goes on; any other exception is recorded as FAIL and re-raised.
    * ``value`` is the proxy score (higher is better) of COMPLETE trials and NaN otherwise.
    * Objectives that must cross a process boundary are :class:`ObjectiveRecipe` s (NNI accepts
      nothing else; Optuna builds them in-process).

    ``name`` is the backend's registry key (``optuna``, ``nni``) and fills the ``backend``
    column of the trial table (:data:`TRIAL_COLUMNS`, ``params_*``, :data:`EXTRA_COLUMNS`).
    """

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


__all__ = [
    "EXTRA_COLUMNS",
    "FINISHED_STATES",
    "STATES",
    "TRIAL_COLUMNS",
    "Objective",
    "ObjectiveRecipe",
    "Pruned",
    "Reporter",
    "SearchBackend",
    "TrialCallback",
    "empty_trials_frame",
    "order_columns",
]
