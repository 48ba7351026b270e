"""``krum``: against a hand-computed case and a brute-force reference; outliers never chosen."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import make_aggregator
from distdd_nas.federation.aggregators.krum import krum_scores


def _items(values: list[list[float]]) -> list[dict[str, np.ndarray]]:
    return [{"a": np.array(v[:1], dtype=np.float32), "b": np.array(v[1:])} for v in values]


def test_scores_match_a_brute_force_reference() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 5))
    f = 2
    want = []
    for i in range(7):
        d = sorted(float(((vectors[i] - vectors[j]) ** 2).sum()) for j in range(7) if j != i)
        want.append(sum(d[: 7 - f - 2]))
    np.testing.assert_allclose(krum_scores(vectors, f=f), want, rtol=1e-10)


def test_hand_computed_krum_picks_the_central_reply() -> None:
    # 1-D points 0, 1, 2, 10 with f=1: k = 4-1-2 = 1 nearest neighbour; scores 1, 1, 1, 64.
    items = _items([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    out = make_aggregator({"name": "krum", "f": 1})(items, [1.0] * 4)
    np.testing.assert_allclose(out["a"], [0.0])  # tie among 0, 1, 2 → the first
    assert out["a"].dtype == np.float32
    multi = make_aggregator({"name": "krum", "f": 1, "m": 3})(items, [1.0] * 4)
    np.testing.assert_allclose(multi["a"], [1.0])  # mean of the three honest replies


def test_a_huge_or_flipped_update_is_never_selected() -> None:
    rng = np.random.default_rng(1)
    honest = [[float(x) for x in rng.normal(1.0, 0.1, size=3)] for _ in range(6)]
    for attack in ([1e6, 1e6, 1e6], [-1.0, -1.0, -1.0]):
        for position in range(7):
            values = [*honest[:position], attack, *honest[position:]]
            out = make_aggregator({"name": "krum", "f": 1, "m": 2})(_items(values), [1.0] * 7)
            assert np.all(np.abs(np.concatenate([out["a"], out["b"]]) - 1.0) < 0.5)


@pytest.mark.parametrize(("f", "m"), [(-1, 1), (0.5, 1), (1, 0)])
def test_bad_options_name_the_problem(f: object, m: object) -> None:
    with pytest.raises(ConfigError, match=r"krum (f|m)=.* must be a whole number"):
        make_aggregator({"name": "krum", "f": f, "m": m})  # type: ignore[dict-item]
