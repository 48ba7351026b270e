"""Search backends: the shared interface, the registry :data:`BACKENDS` and :func:`create_backend`.

Layout (imports go one way only — backends import :mod:`.base`, ``base`` imports no backend):

* :mod:`.base` — the :class:`SearchBackend` protocol and its contract, :class:`ObjectiveRecipe`,
  :class:`Pruned`, the trial-table columns, :func:`order_columns`, :func:`empty_trials_frame`;
* :mod:`.optuna` — :class:`~distdd_nas.search.backends.optuna.OptunaBackend`, with
  :mod:`.optuna_storage` (storages by URL, :func:`make_storage`) and :mod:`.optuna_samplers`
  (samplers and pruners by name in ``SAMPLERS`` / ``PRUNERS``);
* :mod:`.nni` — :class:`~distdd_nas.search.backends.nni.NniBackend` (``nni`` is an optional
  extra; its assessors in ``PRUNERS``), with :mod:`.nni_trial` (the trial command) and
  :mod:`.nni_tuner` (the tuner NNI's dispatcher imports by name; tuners in ``TUNERS``).

Names are exported lazily (PEP 562), so NNI's dispatcher and trial processes, which import a
submodule of this package by name, do not pay for Optuna and pandas here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distdd_nas.errors import ConfigError

if TYPE_CHECKING:
    from distdd_nas.search.backends.base import (
        EXTRA_COLUMNS,
        FINISHED_STATES,
        STATES,
        TRIAL_COLUMNS,
        Objective,
        ObjectiveRecipe,
        Pruned,
        Reporter,
        SearchBackend,
        TrialCallback,
        empty_trials_frame,
        order_columns,
    )
    from distdd_nas.search.backends.nni import NniBackend
    from distdd_nas.search.backends.optuna import OptunaBackend
    from distdd_nas.search.space import SearchSpace

#: Builds one backend from :func:`create_backend`'s keyword arguments (``workdir`` a Path).
BackendFactory = Callable[..., "SearchBackend"]


def _optuna_backend(
    *,
    space: SearchSpace,
    storage: str | None,
    study_name: str,
    sampler: str,
    pruner: str,
    seed: int,
    workdir: Path,
    reference: Mapping[str, Any] | None,
    trial_timeout_s: float | None,
    concurrency: int,
) -> SearchBackend:
    from distdd_nas.search.backends.optuna import OptunaBackend

    url = storage or f"sqlite:///{(workdir / 'optuna.db').resolve()}"
    return OptunaBackend(
        space=space,
        storage=url,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        reference=reference,
    )


def _nni_backend(
    *,
    space: SearchSpace,
    storage: str | None,
    study_name: str,
    sampler: str,
    pruner: str,
    seed: int,
    workdir: Path,
    reference: Mapping[str, Any] | None,
    trial_timeout_s: float | None,
    concurrency: int,
) -> SearchBackend:
    from distdd_nas.search.backends.nni import NniBackend

    return NniBackend(
        space=space,
        workdir=workdir / "nni",
        tuner=sampler,
        pruner=pruner,
        seed=seed,
        study_name=study_name,
        reference=reference,
        trial_timeout_s=trial_timeout_s,
        concurrency=concurrency,
    )


#: Search backends by name (``search.backend``); each factory imports its backend when called.
BACKENDS: dict[str, BackendFactory] = {"optuna": _optuna_backend, "nni": _nni_backend}


def _backend_factory(name: str) -> BackendFactory:
    factory = BACKENDS.get(name)
    if factory is None:
        raise ConfigError(f"unknown search backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return factory


def check_backend(name: str) -> None:
    """Raise ConfigError unless ``name`` is a known backend."""
    _backend_factory(name)


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
    """The search backend ``name`` (a key of :data:`BACKENDS`) for one study.

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
    factory = _backend_factory(name)
    return factory(
        space=space,
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        workdir=Path(workdir),
        reference=reference,
        trial_timeout_s=trial_timeout_s,
        concurrency=concurrency,
    )


_EXPORTS = {
    "EXTRA_COLUMNS": "base",
    "FINISHED_STATES": "base",
    "STATES": "base",
    "TRIAL_COLUMNS": "base",
    "Objective": "base",
    "ObjectiveRecipe": "base",
    "Pruned": "base",
    "Reporter": "base",
    "SearchBackend": "base",
    "TrialCallback": "base",
    "empty_trials_frame": "base",
    "order_columns": "base",
    "NniBackend": "nni",
    "OptunaBackend": "optuna",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BACKENDS",
    "EXTRA_COLUMNS",
    "FINISHED_STATES",
    "STATES",
    "TRIAL_COLUMNS",
    "BackendFactory",
    "NniBackend",
    "Objective",
    "ObjectiveRecipe",
    "OptunaBackend",
    "Pruned",
    "Reporter",
    "SearchBackend",
    "TrialCallback",
    "check_backend",
    "create_backend",
    "empty_trials_frame",
    "order_columns",
]
