"""Candidates: one path from params (trial or table row) to what is trained; stable ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from distdd_nas.errors import ConfigError, SearchSpaceError
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.models import ArchSpec
from distdd_nas.search.candidate import Candidate, CandidateFactory, params_from_row
from distdd_nas.training import TrainSettings


def test_params_override_the_reference(factory: CandidateFactory) -> None:
    c = factory({"arch.depth": 1, "arch.act": "sigmoid", "train.lr": 0.1, "train.epochs": 3})
    assert c.arch == ArchSpec(depth=1, width=8, act="sigmoid")
    assert (c.train.lr, c.train.epochs, c.train.batch_size) == (0.1, 3, 32)
    assert not c.is_fedavg
    assert factory({}).arch == factory.reference


def test_candidate_id_is_stable_and_canonical(factory: CandidateFactory) -> None:
    a = factory({"arch.depth": 1, "arch.width": 4})
    b = factory({"arch.width": 4.0, "arch.depth": 1.0})  # other order, floats from a CSV
    assert a == b and a.candidate_id == b.candidate_id and hash(a) == hash(b)
    assert len(a.candidate_id) == 10
    # a value fixed by the space or equal to the reference builds the same network
    assert factory({"arch.depth": 2}).candidate_id == factory({}).candidate_id
    assert factory({"arch.depth": 1}).candidate_id != factory({"arch.depth": 2}).candidate_id
    assert factory({"train.lr": 0.1}).candidate_id != factory({}).candidate_id
    # the id does not depend on the process: same dict, same id every time
    assert factory({"arch.depth": 1, "arch.width": 4}).candidate_id == a.candidate_id


def test_trial_params_and_table_rows_build_the_same_candidate(
    factory: CandidateFactory, tmp_path: Path
) -> None:
    params = [
        {"arch.depth": 1, "arch.width": 4, "arch.act": "relu"},
        {"arch.depth": 2, "arch.act": "sigmoid", "fedavg.lr": 0.05},
    ]
    rows = [
        {"number": i, **{f"params_{k}": v for k, v in p.items()}} for i, p in enumerate(params)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    table = pd.read_csv(tmp_path / "trials.csv")  # NaN holes, ints read back as floats
    for p, (_, row) in zip(params, table.iterrows(), strict=True):
        assert params_from_row(row.to_dict()) == p
        assert factory.from_row(row.to_dict()) == factory(p)


def test_fedavg_overrides(factory: CandidateFactory) -> None:
    base = FedAvgSettings(
        rounds=5, local=TrainSettings(epochs=1, lr=0.05, batch_size=32), server_lr=1.0
    )
    c = factory(
        {
            "fedavg.lr": 0.2,
            "fedavg.local_epochs": 3,
            "fedavg.batch_size": 16,
            "fedavg.server_lr": 0.5,
            "fedavg.rounds": 2,
        }
    )
    assert c.is_fedavg
    s = c.fedavg_settings(base)
    assert (s.local.lr, s.local.epochs, s.local.batch_size) == (0.2, 3, 16)
    assert (s.server_lr, s.rounds, s.local.momentum) == (0.5, 2, base.local.momentum)
    assert factory({}).fedavg_settings(base) == base


def test_reference_values_round_trip(factory: CandidateFactory) -> None:
    values = factory.reference_values(FedAvgSettings())
    assert values["arch.depth"] == 2 and values["fedavg.rounds"] == 20
    arch_only = {k: v for k, v in values.items() if k.startswith("arch.")}
    assert factory(arch_only) == factory({})
    assert CandidateFactory.from_dict(factory.to_dict()) == factory


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"arch.colour": 1}, SearchSpaceError, "'arch.colour' is unknown"),
        ({"arch.depth": 1.5}, SearchSpaceError, "'arch.depth' = 1.5 must be a whole number"),
        ({"train.lr": "fast"}, SearchSpaceError, "'train.lr' = 'fast' must be a number"),
        ({"arch.act": "tanh"}, ConfigError, "act='tanh' is invalid"),
    ],
)
def test_bad_params(
    factory: CandidateFactory, params: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        factory(params)


def test_from_params_is_the_factory_path(factory: CandidateFactory) -> None:
    p = {"arch.depth": 1}
    assert Candidate.from_params(p, reference=factory.reference, train=factory.train) == factory(p)
    assert factory(p).describe() == "ConvNet-d1w8-relu-instance-avg"
