"""The aggregator registry is the one list: config choices, errors and Study checks read it."""

from __future__ import annotations

import pytest

from distdd_nas.config import load_config
from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import AGGREGATORS, make_aggregator
from distdd_nas.study import Study


def test_every_registered_aggregator_builds_with_its_defaults() -> None:
    for name in AGGREGATORS:
        assert callable(make_aggregator(name))
        assert callable(make_aggregator({"name": name}))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "mode",
            r"unknown aggregator 'mode'; choose one of mean, median, trimmed_mean, krum, "
            r"centered_clip$",
        ),
        (
            {"name": "median", "trim": 0.1},
            r"aggregator 'median' has no option 'trim'; it takes "
            r"max_weight_ratio, max_deviation_ratio$",
        ),
        (
            {"name": "trimmed_mean", "cut": 1},
            r"has no option 'cut'; it takes trim, max_weight_ratio, max_deviation_ratio$",
        ),
        ({"name": "mean", "max_weight_ratio": 0.5}, r"max_weight_ratio=0.5 is out of range"),
        ({"name": "centered_clip", "radius": 0}, r"centered_clip radius=0 is out of range"),
        ({"trim": 0.1}, r"must be a name or a table with a name"),
    ],
)
def test_bad_specs_name_the_problem_and_the_choices(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_aggregator(spec)  # type: ignore[arg-type]


def test_a_study_with_a_bad_aggregator_fails_when_built_naming_the_key() -> None:
    config = load_config("studies/smoke.toml", ["distill.aggregator=mode"])
    with pytest.raises(ConfigError, match=r"^distill.aggregator: unknown aggregator 'mode'"):
        Study(config)
    table = load_config("studies/smoke.toml", ['fedavg.aggregator={name="trimmed_mean",trim=0.3}'])
    assert Study(table).fedavg_settings.aggregator == {"name": "trimmed_mean", "trim": 0.3}
