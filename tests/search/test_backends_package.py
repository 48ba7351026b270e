"""The layout of ``distdd_nas.search.backends``: one-way imports and the paths NNI runs by name."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from distdd_nas.search import backends
from distdd_nas.search.backends import nni as nni_backend


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_base_imports_no_backend_and_the_package_is_lazy() -> None:
    _run(
        "import sys\n"
        "import distdd_nas.search.backends\n"
        "assert 'optuna' not in sys.modules and 'pandas' not in sys.modules\n"
        "import distdd_nas.search.backends.base\n"
        "loaded = [m for m in sys.modules if m.startswith('distdd_nas.search.backends.')]\n"
        "assert loaded == ['distdd_nas.search.backends.base'], loaded\n"
    )


def test_optuna_module_uses_the_optuna_library() -> None:
    module = importlib.import_module("distdd_nas.search.backends.optuna")
    assert module.optuna.__name__ == "optuna"
    assert hasattr(module.optuna, "create_study")
    assert backends.optuna is module  # the submodule, as Python binds it on import


def test_reexports_resolve() -> None:
    from distdd_nas.search.backends.base import ObjectiveRecipe
    from distdd_nas.search.backends.optuna import OptunaBackend

    assert backends.ObjectiveRecipe is ObjectiveRecipe
    assert backends.OptunaBackend is OptunaBackend
    with pytest.raises(AttributeError):
        _ = backends.no_such_name


def test_trial_command_module_is_importable() -> None:
    module = importlib.import_module(nni_backend.TRIAL_MODULE)
    assert callable(module.main)


def test_tuner_class_path_resolves() -> None:
    pytest.importorskip("nni")
    module, _, name = nni_backend.TUNER_CLASS.rpartition(".")
    assert getattr(importlib.import_module(module), name).__name__ == "ReferenceFirstTuner"


def test_nni_names_are_checked_without_the_nni_extra() -> None:
    _run(
        "import sys\n"
        "sys.modules['nni'] = None  # as if the extra were not installed\n"
        "from distdd_nas.errors import ConfigError, MissingDependencyError\n"
        "from distdd_nas.search.backends.nni import NniBackend\n"
        "from distdd_nas.search.space import SearchSpace\n"
        "space = SearchSpace.from_dict(\n"
        "    {'params': {'train.lr': {'type': 'float', 'low': 0.01, 'high': 0.1}}})\n"
        "for kwargs, error in (({'tuner': 'gp'}, ConfigError), ({}, MissingDependencyError)):\n"
        "    try:\n"
        "        NniBackend(space=space, workdir='.', **kwargs)\n"
        "    except error:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(kwargs)\n"
    )
