"""Optuna samplers and pruners by name (``search.sampler``, ``search.pruner``), seeded per study.

The registries :data:`SAMPLERS` and :data:`PRUNERS` hold the Optuna names a config may use (the
``search.sampler`` / ``search.pruner`` literals are kept equal to their keys, with NNI's, by
``tests/test_registries.py``); :func:`make_sampler` seeds a sampler from the study seed and
the number of stored trials, so a fresh study is reproducible and a resumed one does not replay
the stream that proposed its first trials. Used by
:class:`~distdd_nas.search.backends.optuna.OptunaBackend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from distdd_nas.errors import ConfigError, MissingDependencyError
from distdd_nas.search.space import SearchSpace
from distdd_nas.seeding import derive_seed


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without ``study.stop()`` (which only works inside
    ``Study.optimize``); the ask/tell loop stops at the grid size itself."""

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any
    ) -> None:
        """Nothing to do: the backend caps the number of trials at the grid size."""


def _tpe(seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _random(seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _grid(seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return AskTellGridSampler(space.grid(), seed=seed)


def _cmaes(seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "the cmaes sampler needs the cmaes package; pip install "
            'cmaes, or use search.sampler = "tpe"'
        ) from None
    return optuna.samplers.CmaEsSampler(seed=seed)


def _gp(seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)


#: Optuna samplers by name (``search.sampler``): factory(seed, space) → sampler.
SAMPLERS: dict[str, Callable[[int, SearchSpace], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
    "grid": _grid,
    "cmaes": _cmaes,
    "gp": _gp,
}

#: Optuna pruners by name (``search.pruner``); ``median`` waits for 3 finished trials and one
#: report.
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    "hyperband": optuna.pruners.HyperbandPruner,
    # Rungs at 1, 3, 9, ... steps (rounds of FedAvg, epochs of the proxy), the top third of each
    # rung goes on: the successive-halving schedule of the FL-HPO literature (η = 3).
    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=3
    ),
    "none": optuna.pruners.NopPruner,
}


def make_sampler(
    name: str, *, seed: int, space: SearchSpace, position: int = 0
) -> optuna.samplers.BaseSampler:
    """Sampler by name (a key of :data:`SAMPLERS`), seeded from the study seed and
    ``position``.

    The backend makes a fresh sampler for every trial it asks for, with ``position`` = the
    number of trials that count towards the search so far (finished or running, failures
    aside). A sampler's only state besides the study's stored trials is its random stream, so
    the k-th proposal depends on the seed, k and the history alone: a search killed and
    resumed proposes the very candidates an uninterrupted one does. The grid sampler ignores
    ``position``: Optuna orders its grid with the seed, and every instance must agree on which
    grid id is which point.

    Raises:
        ConfigError: Unknown name, or ``grid`` over a space with a continuous float.
        MissingDependencyError: ``cmaes`` without the ``cmaes`` package.
    """
    s = derive_seed(seed, "sampler", 0 if name == "grid" else position) % 2**32
    factory = SAMPLERS.get(name)
    if factory is None:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return factory(s, space)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Pruner by name (a key of :data:`PRUNERS`).

    Raises:
        ConfigError: Unknown name.
    """
    factory = PRUNERS.get(name)
    if factory is None:
        raise ConfigError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    return factory()


__all__ = ["PRUNERS", "SAMPLERS", "AskTellGridSampler", "make_pruner", "make_sampler"]
