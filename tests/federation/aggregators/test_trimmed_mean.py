"""``trimmed_mean`` against hand-computed cases, with its ``trim`` option."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import make_aggregator

ITEMS = [{"x": np.array([v], dtype=np.float64)} for v in (1.0, 2.0, 3.0, 4.0, 1000.0)]


def test_trimmed_mean_drops_extremes() -> None:
    out = make_aggregator({"name": "trimmed_mean", "trim": 0.2})(ITEMS, [1.0] * 5)
    np.testing.assert_allclose(out["x"], [3.0])  # drop 1 lowest, 1 highest → mean(2, 3, 4)
    plain = {"name": "trimmed_mean", "trim": 0.0, "max_deviation_ratio": 0}  # guard off
    out0 = make_aggregator(plain)(ITEMS, [1.0] * 5)
    np.testing.assert_allclose(out0["x"], [202.0])


def test_default_trim_is_a_tenth() -> None:
    items = [{"x": np.array([float(v)])} for v in range(10)]  # cut 1 each end → mean(1..8)
    np.testing.assert_allclose(make_aggregator("trimmed_mean")(items, [1.0] * 10)["x"], [4.5])


def test_trim_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"trim=0.6 is out of range; use 0 <= trim < 0.5"):
        make_aggregator({"name": "trimmed_mean", "trim": 0.6})
