"""NNI pieces that run without an experiment: the reference-first tuner and argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.search.space import SearchSpace
from tests.search.conftest import REFERENCE

pytest.importorskip("nni")
pytestmark = [pytest.mark.nni, pytest.mark.timeout(60)]


def test_reference_first_tuner_then_delegates(tiny_space: SearchSpace) -> None:
    from distdd_nas.search.backends.nni_tuner import ReferenceFirstTuner

    history = [{"parameter": {"arch.depth": 1, "arch.width": 4, "arch.act": "relu"}, "value": 0.5}]
    tuner = ReferenceFirstTuner(algorithm="tpe", seed=0, reference=REFERENCE, history=history)
    tuner.update_search_space(tiny_space.to_nni())
    assert tuner.generate_parameters(0) == REFERENCE
    tuner.receive_trial_result(0, REFERENCE, 0.7)  # replayed into TPE as history
    tuner.trial_end(0, True)
    nxt = tuner.generate_parameters(1)
    assert set(nxt) == set(tiny_space.names)
    assert tiny_space.point(nxt) == nxt
    tuner.receive_trial_result(1, nxt, 0.1)
    again = ReferenceFirstTuner(algorithm="tpe", seed=0, reference=REFERENCE, history=history)
    again.update_search_space(tiny_space.to_nni())
    again.generate_parameters(0)
    again.receive_trial_result(0, REFERENCE, 0.7)
    assert again.generate_parameters(1) == nxt  # seeded
    for algorithm in ("random", "grid", "evolution"):
        t = ReferenceFirstTuner(algorithm=algorithm, seed=0, reference=None)
        t.update_search_space(tiny_space.to_nni())
        assert tiny_space.point(t.generate_parameters(0)) is not None
    with pytest.raises(ValueError, match="unknown NNI tuner 'smac'"):
        ReferenceFirstTuner(algorithm="smac")


def test_nni_backend_arguments(tiny_space: SearchSpace, tmp_path: Path) -> None:
    from distdd_nas.search.backends.nni import NniBackend

    with pytest.raises(ConfigError, match="sampler 'gp' is not available with the NNI backend"):
        NniBackend(space=tiny_space, workdir=tmp_path, tuner="gp")
    with pytest.raises(ConfigError, match="pruner 'hyperband' is not available"):
        NniBackend(space=tiny_space, workdir=tmp_path, pruner="hyperband")
    backend = NniBackend(space=tiny_space, workdir=tmp_path)
    with pytest.raises(ConfigError, match="pass an ObjectiveRecipe"):
        backend.optimize(lambda p, r: (0.0, {}), n_trials=1)
    assert len(backend.trials_frame()) == 0
    assert "params_arch.depth" in backend.trials_frame().columns
