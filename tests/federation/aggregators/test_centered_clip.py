"""``centered_clip`` against a hand-computed case and a slow per-reply reference."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import make_aggregator
from distdd_nas.federation.aggregators.centered_clip import CenteredClipOptions, centered_clip


def reference(points: list[np.ndarray], weights: list[float], radius: float, iterations: int):  # type: ignore[no-untyped-def]
    """Karimireddy et al.'s update written reply by reply."""
    v = np.median(np.stack(points), axis=0)
    tau = radius * float(np.median([np.linalg.norm(p - v) for p in points]))
    total = sum(weights)
    for _ in range(iterations):
        step = np.zeros_like(v)
        for p, w in zip(points, weights, strict=True):
            d = float(np.linalg.norm(p - v))
            step += w / total * (p - v) * (min(1.0, tau / d) if d > 0 else 1.0)
        v = v + step
    return v


def test_one_iteration_hand_computed() -> None:
    # values 0, 1, 2, 10 → median 1.5; distances 1.5, .5, .5, 8.5 → τ = median = 1.0;
    # clipped deviations −1, −.5, .5, 1 → mean 0 → stays at 1.5
    items = [{"x": np.array([v])} for v in (0.0, 1.0, 2.0, 10.0)]
    out = centered_clip(items, [1.0] * 4, CenteredClipOptions(radius=1.0, iterations=1))
    np.testing.assert_allclose(out["x"], [1.5])


def test_matches_the_reference_on_random_replies() -> None:
    rng = np.random.default_rng(1)
    points = [rng.normal(size=6) for _ in range(7)] + [100 * rng.normal(size=6)]
    weights = [float(w) for w in rng.integers(1, 9, size=8)]
    items = [{"w": p.reshape(2, 3)} for p in points]
    got = centered_clip(items, weights, CenteredClipOptions(radius=2.0, iterations=3))["w"]
    np.testing.assert_allclose(got.ravel(), reference(points, weights, 2.0, 3), rtol=1e-12)


def test_is_in_the_registry_with_options() -> None:
    combine = make_aggregator({"name": "centered_clip", "radius": 0.5, "iterations": 2})
    out = combine([{"x": np.array([1.0])}, {"x": np.array([3.0])}], [1.0, 1.0])
    np.testing.assert_allclose(out["x"], [2.0])
    with pytest.raises(ConfigError, match=r"iterations=0 is out of range"):
        make_aggregator({"name": "centered_clip", "iterations": 0})
