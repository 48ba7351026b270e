"""The guard every aggregator runs behind, against hand-computed cases: capped weights, pulled
back outliers, untouched honest replies (the same arrays), and a ×10⁶ update bounded."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import AGGREGATORS, make_aggregator
from distdd_nas.federation.aggregators.guard import Guard


def items(*values: float) -> list[dict[str, np.ndarray]]:
    return [{"x": np.array([v], dtype=np.float64)} for v in values]


def test_outlier_is_pulled_onto_the_radius_hand_computed() -> None:
    # median 3, distances 2, 1, 0, 1, 997 → median distance 1, radius 10 → 1000 becomes 13
    out = make_aggregator("mean")(items(1, 2, 3, 4, 1000), [1.0] * 5)
    np.testing.assert_allclose(out["x"], [(1 + 2 + 3 + 4 + 13) / 5])
    off = make_aggregator({"name": "mean", "max_deviation_ratio": 0})
    np.testing.assert_allclose(off(items(1, 2, 3, 4, 1000), [1.0] * 5)["x"], [202.0])


def test_honest_replies_pass_through_as_the_same_objects() -> None:
    honest = items(1.0, 1.5, 2.0, 2.5)
    assert all(a is b for a, b in zip(Guard().items(honest), honest, strict=True))
    assert Guard().weights([300.0, 500.0, 700.0]) == [300.0, 500.0, 700.0]


def test_claimed_counts_are_capped_at_ten_medians() -> None:
    # a client claiming 10⁹ examples next to three of 100: cap 10 × median(100, 100, 100, 1e9)
    assert Guard().weights([100, 100, 100, 1e9]) == [100, 100, 100, 1000]
    out = make_aggregator("mean")(items(0, 1, 0, 1), [100, 100, 100, 1e9])
    np.testing.assert_allclose(out["x"], [1100 / 1300])  # not ≈ 1


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_a_million_fold_update_is_bounded_by_every_aggregator(name: str) -> None:
    rng = np.random.default_rng(0)
    honest = [{"w": rng.normal(size=50)} for _ in range(9)]
    spread = float(np.median([np.linalg.norm(h["w"]) for h in honest]))
    attacked = [*honest, {"w": 1e6 * honest[0]["w"]}]
    out = make_aggregator(name)(attacked, [1.0] * 10)["w"]
    clean = make_aggregator(name)(honest, [1.0] * 9)["w"]
    # with N = 10 and the guard's radius of 10 median deviations, the mean moves at most
    # ~1 median deviation; the robust aggregators far less
    assert np.linalg.norm(out - clean) <= 2.0 * spread


def test_guard_options_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"max_deviation_ratio=0.5 is out of range; use 0"):
        Guard(max_deviation_ratio=0.5)
