"""``median``: coordinate-wise and unweighted, against a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import EngineError
from distdd_nas.federation.aggregators import make_aggregator

A = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
B = {"w": np.array([3.0, 6.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
C = {"w": np.array([100.0, -50.0], dtype=np.float32), "b": np.array([1.0], dtype=np.float32)}


def test_median_is_coordinate_wise_and_unweighted() -> None:
    out = make_aggregator("median")([A, B, C], [100.0, 1.0, 1.0])
    np.testing.assert_allclose(out["w"], [3.0, 2.0])
    np.testing.assert_allclose(out["b"], [1.0])
    assert out["w"].dtype == np.float32


def test_one_huge_reply_cannot_move_the_median_beyond_the_honest_ones() -> None:
    honest = [{"x": np.array([v])} for v in (1.0, 2.0, 3.0, 4.0)]
    out = make_aggregator("median")([*honest, {"x": np.array([1e6])}], [1.0] * 5)
    assert 1.0 <= float(out["x"][0]) <= 4.0


def test_empty_round_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match=r"nothing to aggregate"):
        make_aggregator("median")([], [])
