"""``centered_clip``: centered clipping (Karimireddy, He and Jaggi, ICML 2021), a norm-based
defence.

Start from a robust centre ``v`` (the coordinate-wise median) and move it ``iterations``
times by the weighted mean of the clipped deviations::

    v ← v + Σ_i w_i · (x_i − v) · min(1, τ / ‖x_i − v‖) / Σ_i w_i

with ``τ = radius × median_i ‖x_i − v₀‖``. A reply can pull the result by at most ``τ`` per
iteration whatever its norm, while honest replies near the centre count in full (unlike the
median, which discards their average). Norms are L2 over all floating-point arrays of a reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators.base import Aggregator, Arrays, require_items, stack


@dataclass(frozen=True)
class CenteredClipOptions:
    """``radius``: τ in median deviations (> 0); ``iterations``: clipping passes (>= 1)."""

    radius: float = 1.0
    iterations: int = 3

    def __post_init__(self) -> None:
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise ConfigError(f"centered_clip radius={self.radius} is out of range; use > 0")
        if not (isinstance(self.iterations, int) and self.iterations >= 1):
            raise ConfigError(
                f"centered_clip iterations={self.iterations} is out of range; use an integer >= 1"
            )


def centered_clip(
    items: Sequence[Arrays], weights: Sequence[float], options: CenteredClipOptions
) -> dict[str, np.ndarray]:
    """The centred-clipping aggregate of ``items`` (see the module doc), in each key's dtype."""
    require_items(items)
    keys = list(items[0])
    x = {k: stack(items, k) for k in keys}
    floats = [k for k in keys if np.asarray(items[0][k]).dtype.kind == "f"]
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(items), 1.0 / len(items))
    v = {k: np.median(x[k], axis=0) for k in keys}

    def distances() -> np.ndarray:
        sq = sum(np.sum((x[k] - v[k]).reshape(len(items), -1) ** 2, axis=1) for k in floats)
        return np.sqrt(np.asarray(sq, dtype=np.float64))

    tau = options.radius * float(np.median(distances()))
    for _ in range(options.iterations):
        d = distances()
        scale = np.minimum(1.0, np.divide(tau, d, out=np.ones_like(d), where=d > 0))
        for k in floats:
            v[k] = v[k] + np.tensordot(w * scale, x[k] - v[k], axes=1).reshape(v[k].shape)
    return {k: v[k].astype(np.asarray(items[0][k]).dtype) for k in keys}


AGGREGATOR = Aggregator(name="centered_clip", options=CenteredClipOptions, fn=centered_clip)
