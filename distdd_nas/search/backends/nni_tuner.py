"""An NNI tuner that proposes the reference candidate first, then delegates to a built-in tuner.

NNI has no "enqueue trial" call, so :class:`~distdd_nas.search.backends.nni.NniBackend` installs
this wrapper as a customised tuner (it runs inside NNI's dispatcher process, importing this
module by name). It also replays the results of earlier experiments of the same search
(``history``) into the inner tuner, which is how an NNI search resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

try:
    from nni.tuner import Tuner
except ImportError:  # without the nni extra only TUNERS is usable (NniBackend checks names)
    Tuner = object  # type: ignore[misc,assignment]


def _tpe(*, seed: int | None, population_size: int) -> Tuner:
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    return TpeTuner(optimize_mode="maximize", seed=seed)


def _random(*, seed: int | None, population_size: int) -> Tuner:
    from nni.algorithms.hpo.random_tuner import RandomTuner

    return RandomTuner(seed=seed)


def _grid(*, seed: int | None, population_size: int) -> Tuner:
    from nni.algorithms.hpo.gridsearch_tuner import GridSearchTuner

    return GridSearchTuner()


def _evolution(*, seed: int | None, population_size: int) -> Tuner:
    from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

    return EvolutionTuner(optimize_mode="maximize", population_size=population_size)


#: NNI's built-in tuners by name (``search.sampler`` with the NNI backend); each factory
#: imports its tuner when called, so this table is importable without the ``nni`` extra.
TUNERS: dict[str, Callable[..., Tuner]] = {
    "tpe": _tpe,
    "random": _random,
    "grid": _grid,
    "evolution": _evolution,
}


def _inner(algorithm: str, *, seed: int | None, population_size: int) -> Tuner:
    factory = TUNERS.get(algorithm)
    if factory is None:
        raise ValueError(f"unknown NNI tuner {algorithm!r}; choose one of {', '.join(TUNERS)}")
    return factory(seed=seed, population_size=population_size)


class ReferenceFirstTuner(Tuner):  # type: ignore[misc]
    """Proposes ``reference`` as the first trial, then whatever the inner tuner proposes.

    Args:
        algorithm: Inner built-in tuner: ``tpe``, ``random``, ``grid`` or ``evolution``.
        seed: Seed of the inner tuner (TPE and Random; Evolution cannot be seeded).
        reference: Parameters of the first trial, or None.
        history: ``[{"parameter": {...}, "value": float}]`` of earlier finished trials.
        population_size: Evolution's population.
    """

    def __init__(
        self,
        algorithm: str = "tpe",
        seed: int | None = None,
        reference: Mapping[str, Any] | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        population_size: int = 16,
    ) -> None:
        self.inner = _inner(algorithm, seed=seed, population_size=population_size)
        self.reference = dict(reference) if reference else None
        self.history = [dict(h) for h in history or ()]
        self._reference_id: int | None = None

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.inner.update_search_space(search_space)
        if self.history:
            self.inner.import_data(self.history)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if self.reference is not None and self._reference_id is None:
            self._reference_id = parameter_id
            return dict(self.reference)
        params: dict[str, Any] = self.inner.generate_parameters(parameter_id, **kwargs)
        return params

    def receive_trial_result(
        self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any
    ) -> None:
        if parameter_id == self._reference_id:
            self.inner.import_data([{"parameter": parameters, "value": value}])
        else:
            self.inner.receive_trial_result(parameter_id, parameters, value, **kwargs)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        if parameter_id != self._reference_id:
            self.inner.trial_end(parameter_id, success, **kwargs)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        self.inner.import_data(data)


__all__ = ["TUNERS", "ReferenceFirstTuner"]
