"""``krum``: Krum and multi-Krum (Blanchard et al., NeurIPS 2017), a distance-based defence.

Each reply is scored by the sum of squared distances to its ``n − f − 2`` nearest other replies
(all keys flattened into one vector); the ``m`` best-scored replies are averaged, unweighted
(``m = 1`` is Krum, ``m > 1`` multi-Krum). With at most ``f`` Byzantine replies among
``n > 2f + 2``, a selected reply lies close to the honest ones, so a ×10⁶ or sign-flipped update
is never chosen. With fewer replies the neighbour count is clamped to at least one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators.base import Aggregator, Arrays, require_items, stack


@dataclass(frozen=True)
class KrumOptions:
    """``f``: Byzantine replies tolerated (>= 0); ``m``: replies averaged (>= 1)."""

    f: int = 1
    m: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.f, int) or isinstance(self.f, bool) or self.f < 0:
            raise ConfigError(f"krum f={self.f!r} must be a whole number >= 0")
        if not isinstance(self.m, int) or isinstance(self.m, bool) or self.m < 1:
            raise ConfigError(f"krum m={self.m!r} must be a whole number >= 1")


DEFAULT = KrumOptions()


def krum_scores(vectors: np.ndarray, *, f: int) -> np.ndarray:
    """Krum score of each row: sum of squared distances to its ``n − f − 2`` nearest rows."""
    n = len(vectors)
    sq = (vectors**2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * vectors @ vectors.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    k = min(max(n - f - 2, 1), n - 1)
    return np.sort(dist, axis=1)[:, :k].sum(axis=1) if n > 1 else np.zeros(1)


def krum(
    items: Sequence[Arrays], weights: Sequence[float], options: KrumOptions = DEFAULT
) -> dict[str, np.ndarray]:
    """Unweighted mean of the ``m`` replies with the lowest Krum scores (ties: lower index)."""
    del weights
    require_items(items)
    keys = list(items[0])
    flat = np.concatenate([stack(items, k).reshape(len(items), -1) for k in keys], axis=1)
    chosen = np.argsort(krum_scores(flat, f=options.f), kind="stable")[: options.m]
    return {
        k: stack([items[i] for i in chosen], k).mean(axis=0).astype(items[0][k].dtype)
        for k in keys
    }


AGGREGATOR = Aggregator(name="krum", options=KrumOptions, fn=krum)
