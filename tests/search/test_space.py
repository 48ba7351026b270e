"""Search spaces: the shipped files, both converters, and one clear error per invalid entry."""

from __future__ import annotations

import math
from pathlib import Path

import optuna.distributions as od
import pytest

from distdd_nas.errors import SearchSpaceError
from distdd_nas.search.space import SearchSpace

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_spaces_load_and_convert(path: Path) -> None:
    space = SearchSpace.load(path)
    assert set(space.to_optuna()) == set(space.names) == set(space.to_nni())
    assert space.groups() <= {"arch", "train", "fedavg"}


def test_convnet720_is_dc_space() -> None:
    space = SearchSpace.load(SPACES / "convnet720.toml")
    assert space.size == 720
    assert space.fixed == {"arch.family": "convnet"}
    assert all(isinstance(d, od.CategoricalDistribution) for d in space.to_optuna().values())


def test_smoke_space_fits_digits() -> None:
    space = SearchSpace.load(SPACES / "smoke.toml")
    assert space.grid()["arch.depth"] == [1, 2, 3]  # 8 → 4 → 2 → 1 with pooling
    assert space.size < 100


def test_optuna_and_nni_converters() -> None:
    space = SearchSpace.from_dict(
        {
            "params": {
                "arch.act": {"type": "categorical", "choices": ["relu", "sigmoid"]},
                "arch.depth": {"type": "int", "low": 1, "high": 4},
                "train.epochs": {"type": "int", "low": 10, "high": 30, "step": 10},
                "train.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                "train.momentum": {"type": "float", "low": 0.0, "high": 0.9},
                "fedavg.server_lr": {"type": "float", "low": 0.5, "high": 1.5, "step": 0.5},
            }
        }
    )
    opt = space.to_optuna()
    assert opt["arch.act"] == od.CategoricalDistribution(["relu", "sigmoid"])
    assert opt["arch.depth"] == od.IntDistribution(1, 4)
    assert opt["train.epochs"] == od.IntDistribution(10, 30, step=10)
    assert opt["train.lr"] == od.FloatDistribution(1e-3, 1e-1, log=True)
    assert opt["fedavg.server_lr"] == od.FloatDistribution(0.5, 1.5, step=0.5)
    nni = space.to_nni()
    assert nni["arch.act"] == {"_type": "choice", "_value": ["relu", "sigmoid"]}
    assert nni["arch.depth"] == {"_type": "randint", "_value": [1, 5]}  # NNI: upper exclusive
    assert nni["train.epochs"] == {"_type": "choice", "_value": [10, 20, 30]}
    assert nni["train.lr"] == {"_type": "loguniform", "_value": [1e-3, 1e-1]}
    assert nni["train.momentum"] == {"_type": "uniform", "_value": [0.0, 0.9]}
    assert nni["fedavg.server_lr"] == {"_type": "quniform", "_value": [0.5, 1.5, 0.5]}
    assert math.isinf(space.size)
    with pytest.raises(SearchSpaceError, match=r"'train\.lr' is a continuous float"):
        space.grid()


def test_nested_and_quoted_names_are_the_same_space(tmp_path: Path) -> None:
    nested = tmp_path / "nested.toml"
    nested.write_text(
        '[params.arch]\nfamily = "convnet"\n'
        '[params.arch.depth]\ntype = "int"\nlow = 1\nhigh = 3\n',
        encoding="utf-8",
    )
    quoted = tmp_path / "quoted.toml"
    quoted.write_text(
        '[fixed]\n"arch.family" = "convnet"\n'
        '[params."arch.depth"]\ntype = "int"\nlow = 1\nhigh = 3\n',
        encoding="utf-8",
    )
    a, b = SearchSpace.load(nested), SearchSpace.load(quoted)
    assert (a.params, a.fixed) == (b.params, b.fixed)
    assert SearchSpace.from_dict(a.to_dict()).params == a.params


def test_point_expresses_a_reference_in_the_space() -> None:
    space = SearchSpace.load(SPACES / "smoke.toml")
    ref = {
        "arch.family": "convnet",
        "arch.depth": 2,
        "arch.width": 16,
        "arch.act": "relu",
        "arch.norm": "instance",
        "arch.pool": "avg",
        "arch.hidden": 128,
    }
    assert space.point(ref) == {
        "arch.depth": 2,
        "arch.width": 16,
        "arch.act": "relu",
        "arch.norm": "instance",
        "arch.pool": "avg",
    }
    assert space.point({**ref, "arch.width": 128}) is None  # not a choice
    assert space.point({**ref, "arch.depth": 9}) is None  # out of range


BAD = [
    ({"arch.depth": {"type": "integer", "low": 1, "high": 3}}, r"'arch.depth' has unknown type"),
    ({"arch.width": {"type": "categorical", "choices": []}}, r"'arch.width' has empty"),
    ({"arch.width": {"type": "categorical"}}, r"'arch.width' has empty or missing choices"),
    ({"arch.depth": {"type": "int", "low": 4, "high": 1}}, r"'arch.depth' has low > high"),
    (
        {"train.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
        r"'train.lr' is log-scaled but low=0.0 <= 0",
    ),
    (
        {"train.lr": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}},
        r"'train.lr' cannot have both log and step",
    ),
    (
        {"train.lr": {"type": "float", "low": 0.1, "high": 1.0, "step": -1.0}},
        r"'train.lr' has step=-1.0",
    ),
    ({"train.lr": {"type": "float", "low": 0.1}}, r"'train.lr' needs both low and high"),
    (
        {"train.lr": {"type": "float", "low": 0.1, "high": 1.0, "scale": 2}},
        r"'train.lr' \(float\) has unknown key\(s\) \['scale'\]",
    ),
    ({"arch.colour": {"type": "categorical", "choices": [1]}}, r"'arch.colour' is unknown"),
    ({"model.depth": {"type": "int", "low": 1, "high": 2}}, r"'model.depth' is unknown"),
    (
        {"arch.act": {"type": "categorical", "choices": ["relu", "tanh"]}},
        r"'arch.act' has choice 'tanh'; use one of",
    ),
    (
        {"arch.act": {"type": "categorical", "choices": ["relu", "relu"]}},
        r"'arch.act' lists a choice twice",
    ),
    ({"arch.depth": {"type": "int", "low": 1.5, "high": 3}}, r"'arch.depth' needs integers"),
    (
        {"arch.depth": {"type": "float", "low": 1.0, "high": 3.0}},
        r"'arch.depth' is an integer field",
    ),
    ({"arch.act": {"type": "int", "low": 1, "high": 3}}, r"'arch.act' takes names"),
    (
        {"arch.depth": {"type": "int", "low": 1, "high": 3, "log": "yes"}},
        r"'arch.depth' has log = 'yes'",
    ),
]


@pytest.mark.parametrize(("params", "message"), BAD, ids=[m for _, m in BAD])
def test_invalid_parameters_name_the_parameter(params: dict[str, object], message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_dict({"params": params})


def test_invalid_space_structure() -> None:
    with pytest.raises(SearchSpaceError, match="unknown table"):
        SearchSpace.from_dict({"parameters": {}})
    with pytest.raises(SearchSpaceError, match="searches no parameter"):
        SearchSpace.from_dict({"fixed": {"arch.depth": 2}})
    with pytest.raises(SearchSpaceError, match=r"\['arch.depth'\] are both fixed and searched"):
        SearchSpace.from_dict(
            {
                "fixed": {"arch.depth": 2},
                "params": {"arch.depth": {"type": "int", "low": 1, "high": 2}},
            }
        )
    with pytest.raises(SearchSpaceError, match="fixed value 'tanh'"):
        SearchSpace.from_dict(
            {
                "fixed": {"arch.act": "tanh"},
                "params": {"arch.depth": {"type": "int", "low": 1, "high": 2}},
            }
        )


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError, match="not found"):
        SearchSpace.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[params\n", encoding="utf-8")
    with pytest.raises(SearchSpaceError, match="not valid TOML"):
        SearchSpace.load(bad)
