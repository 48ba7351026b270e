"""Aggregators against hand-computed references; non-finite replies never aggregated."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError, EngineError
from distdd_nas.federation import (
    coordinate_median,
    drop_non_finite,
    get_aggregator,
    trimmed_mean,
    weighted_mean,
)

A = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
B = {"w": np.array([3.0, 6.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
C = {"w": np.array([100.0, -50.0], dtype=np.float32), "b": np.array([1.0], dtype=np.float32)}


def test_weighted_mean_matches_hand_computation() -> None:
    out = weighted_mean([A, B], [1.0, 3.0])
    # (1*1 + 3*3)/4 = 2.5 ; (1*2 + 3*6)/4 = 5 ; (0 + 12)/4 = 3
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32


def test_median_is_coordinate_wise_and_unweighted() -> None:
    out = coordinate_median([A, B, C], [100.0, 1.0, 1.0])
    np.testing.assert_allclose(out["w"], [3.0, 2.0])
    np.testing.assert_allclose(out["b"], [1.0])


def test_trimmed_mean_drops_extremes() -> None:
    items = [{"x": np.array([v], dtype=np.float64)} for v in (1.0, 2.0, 3.0, 4.0, 1000.0)]
    out = trimmed_mean(items, [1.0] * 5, trim=0.2)  # drop 1 lowest, 1 highest → mean(2,3,4)
    np.testing.assert_allclose(out["x"], [3.0])
    out0 = trimmed_mean(items, [1.0] * 5, trim=0.0)
    np.testing.assert_allclose(out0["x"], [202.0])


def test_drop_non_finite_excludes_nan_and_inf_clients() -> None:
    bad_nan = {"w": np.array([np.nan, 1.0], dtype=np.float32), "b": np.array([0.0])}
    bad_inf = {"w": np.array([1.0, np.inf], dtype=np.float32), "b": np.array([0.0])}
    kept, rejected = drop_non_finite({0: A, 1: bad_nan, 2: B, 3: bad_inf})
    assert sorted(kept) == [0, 2]
    assert rejected == [1, 3]
    out = weighted_mean(list(kept.values()), [1.0, 1.0])
    assert np.isfinite(out["w"]).all()


def test_get_aggregator_failures() -> None:
    with pytest.raises(ConfigError, match=r"unknown aggregator .mode.*mean, median, trimmed"):
        get_aggregator("mode")
    with pytest.raises(ConfigError, match=r"trim=0.6 is out of range"):
        get_aggregator("trimmed_mean", trim=0.6)
    with pytest.raises(EngineError, match=r"nothing to aggregate"):
        weighted_mean([], [])
