"""Search spaces: parsing, conversion to Optuna and NNI, and one-line errors naming the parameter."""

from __future__ import annotations

from pathlib import Path

import optuna.distributions as od
import pytest

from distdd_nas.errors import SearchSpaceError
from distdd_nas.search.space import SearchSpace
from tests.conftest import REPO


def test_convnet720_is_dc_space() -> None:
    space = SearchSpace.load(REPO / "search_spaces" / "convnet720.toml")
    assert space.size == 720
    assert space.fixed == {"arch.family": "convnet"}
    dists = space.to_optuna()
    assert dists["arch.norm"] == od.CategoricalDistribution(
        ["none", "batch", "layer", "instance", "group"])
    assert space.to_nni()["arch.width"] == {"_type": "choice", "_value": [32, 64, 128, 256]}


def test_every_shipped_space_loads() -> None:
    names = {p.stem for p in (REPO / "search_spaces").glob("*.toml")}
    assert {"convnet720", "train_hparams", "fedavg_hparams", "smoke"} <= names
    for path in (REPO / "search_spaces").glob("*.toml"):
        assert SearchSpace.load(path).params


def test_numeric_conversions() -> None:
    space = SearchSpace.from_dict({"params": {
        "train.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "train.momentum": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.1},
        "train.epochs": {"type": "int", "low": 10, "high": 30, "step": 10},
    }})
    optuna_dists = space.to_optuna()
    assert optuna_dists["train.lr"] == od.FloatDistribution(1e-3, 0.1, log=True)
    assert optuna_dists["train.epochs"] == od.IntDistribution(10, 30, step=10)
    nni = space.to_nni()
    assert nni["train.lr"] == {"_type": "loguniform", "_value": [1e-3, 0.1]}
    assert nni["train.momentum"] == {"_type": "quniform", "_value": [0.0, 0.9, 0.1]}
    assert nni["train.epochs"] == {"_type": "choice", "_value": [10, 20, 30]}


@pytest.mark.parametrize(("params", "message"), [
    ({"arch.depth": {"type": "integer", "low": 1, "high": 2}},
     "parameter 'arch.depth' has unknown type 'integer'"),
    ({"arch.act": {"type": "categorical", "choices": []}},
     "parameter 'arch.act' has empty or missing choices"),
    ({"train.lr": {"type": "float", "low": 0.1, "high": 0.01}},
     "parameter 'train.lr' has low > high (0.1 > 0.01)"),
    ({"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
     "parameter 'train.lr' is log-scaled but low=0.0 <= 0"),
    ({"arch.colour": {"type": "categorical", "choices": [1]}},
     "parameter 'arch.colour' is unknown"),
    ({"train.epochs": {"type": "int", "low": 1.5, "high": 3}},
     "parameter 'train.epochs' is int but low/high are not integers"),
])
def test_bad_spaces_name_the_parameter(params: dict[str, object], message: str) -> None:
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.from_dict({"params": params})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError, match="not found"):
        SearchSpace.load(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[params\n")
    with pytest.raises(SearchSpaceError, match="not valid TOML"):
        SearchSpace.load(bad)
