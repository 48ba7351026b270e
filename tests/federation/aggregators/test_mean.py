"""``mean`` against a hand-computed case; non-finite replies never reach it."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import EngineError
from distdd_nas.federation.aggregators import drop_non_finite, make_aggregator, weighted_mean

A = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
B = {"w": np.array([3.0, 6.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}


def test_weighted_mean_matches_hand_computation() -> None:
    out = make_aggregator("mean")([A, B], [1.0, 3.0])
    # (1*1 + 3*3)/4 = 2.5 ; (1*2 + 3*6)/4 = 5 ; (0 + 12)/4 = 3
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32


def test_drop_non_finite_excludes_nan_and_inf_clients() -> None:
    bad_nan = {"w": np.array([np.nan, 1.0], dtype=np.float32), "b": np.array([0.0])}
    bad_inf = {"w": np.array([1.0, np.inf], dtype=np.float32), "b": np.array([0.0])}
    kept, rejected = drop_non_finite({0: A, 1: bad_nan, 2: B, 3: bad_inf})
    assert sorted(kept) == [0, 2]
    assert rejected == [1, 3]
    assert np.isfinite(weighted_mean(list(kept.values()), [1.0, 1.0])["w"]).all()


def test_nothing_to_aggregate_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match=r"nothing to aggregate"):
        weighted_mean([], [])
    with pytest.raises(EngineError, match=r"positive weight"):
        weighted_mean([A], [0.0])
