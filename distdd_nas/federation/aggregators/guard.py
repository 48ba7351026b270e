"""The guard every aggregator runs behind: bounded weights and bounded deviations.

Two cheap bounds that no honest federation notices and that stop the crudest attacks whatever
aggregator a study picks (the plain ``mean`` included):

* **Weights** (``max_weight_ratio``, default 10): a reply's weight (its reported example count)
  is capped at that multiple of the round's median weight, so a client claiming 10⁹ images
  outweighs a typical client by at most that factor, never the whole round.
* **Deviations** (``max_deviation_ratio``, default 10): a reply farther (L2 over all its
  floating-point arrays) from the coordinate-wise median of the replies than that multiple of
  the median such distance is pulled back onto that radius, so a ×10⁶ update moves a mean of
  N replies by at most ``ratio / N`` typical deviations. Needs three replies (with two, both
  are equally far from their median).

Replies within both bounds are passed through untouched (the very same arrays), so a study
without outliers aggregates bit for bit as without the guard. Either ratio set to 0 turns that
bound off.

DistDD's per-class gradients start with both bounds off (:data:`CLASS_GRADIENT_GUARD`): the
server caps each class count at the count it asked for, which is exact, and honest non-iid
clients differ far more per class than per model — a client holding two images of a class
sends a legitimately noisy gradient. Measured on the quickstart: the deviation bound pulled 16
honest class gradients over the 200 matching steps and changed the distilled set. A study
defends its class gradients by choosing a robust aggregator or setting
``max_deviation_ratio`` in ``distill.aggregator``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators.base import Arrays, stack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Guard:
    """The two bounds (0 disables one)."""

    max_weight_ratio: float = 10.0
    max_deviation_ratio: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_weight_ratio", "max_deviation_ratio"):
            value = getattr(self, name)
            if not (value == 0 or (np.isfinite(value) and value >= 1)):
                raise ConfigError(
                    f"aggregator option {name}={value} is out of range; use 0 (off) or >= 1"
                )

    def weights(self, weights: Sequence[float]) -> list[float]:
        """Each weight capped at ``max_weight_ratio`` × the median weight."""
        w = [float(x) for x in weights]
        if not self.max_weight_ratio or len(w) < 2:
            return w
        cap = self.max_weight_ratio * float(np.median(w))
        if cap <= 0:
            return w
        capped = [min(x, cap) for x in w]
        if capped != w:
            log.warning("capped %d reported example counts at %.0f", sum(x > cap for x in w), cap)
        return capped

    def items(self, items: Sequence[Arrays]) -> list[Arrays]:
        """Replies farther than ``max_deviation_ratio`` × the median distance from the
        coordinate-wise median, moved onto that radius (the others untouched)."""
        if not self.max_deviation_ratio or len(items) < 3:
            return list(items)
        keys = [k for k, v in items[0].items() if np.asarray(v).dtype.kind == "f"]
        center = {k: np.median(stack(items, k), axis=0) for k in keys}
        dist = np.sqrt(
            [
                sum(
                    float(np.sum((np.asarray(item[k], np.float64) - center[k]) ** 2)) for k in keys
                )
                for item in items
            ]
        )
        radius = self.max_deviation_ratio * float(np.median(dist))
        out: list[Arrays] = []
        for item, d in zip(items, dist, strict=True):
            if d <= radius:
                out.append(item)
                continue
            shrink = radius / d
            moved = dict(item)
            for k in keys:
                ref = np.asarray(item[k])
                moved[k] = (center[k] + shrink * (ref.astype(np.float64) - center[k])).astype(
                    ref.dtype
                )
            out.append(moved)
        far = int((dist > radius).sum())
        if far:
            log.warning("pulled %d replies back to %.3g from the median", far, radius)
        return out


DEFAULT_GUARD = Guard()
CLASS_GRADIENT_GUARD = Guard(max_weight_ratio=0.0, max_deviation_ratio=0.0)
GUARD_OPTIONS = ("max_weight_ratio", "max_deviation_ratio")

__all__ = ["CLASS_GRADIENT_GUARD", "DEFAULT_GUARD", "GUARD_OPTIONS", "Guard"]
