"""``trimmed_mean``: per coordinate, drop the ``trim`` fraction of lowest and of highest values,
average the rest (unweighted). ``trim = 0`` is the plain mean; at least one value is kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators.base import Aggregator, Arrays, require_items, stack


@dataclass(frozen=True)
class TrimOptions:
    """``trim``: share cut from each end, 0 <= trim < 0.5."""

    trim: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.trim < 0.5:
            raise ConfigError(f"trim={self.trim} is out of range; use 0 <= trim < 0.5")


DEFAULT = TrimOptions()


def trimmed_mean(
    items: Sequence[Arrays], weights: Sequence[float], options: TrimOptions = DEFAULT
) -> dict[str, np.ndarray]:
    """Coordinate-wise mean after dropping ⌊trim · n⌋ values at each end (weights ignored)."""
    del weights
    require_items(items)
    n = len(items)
    cut = int(np.floor(options.trim * n))
    if 2 * cut >= n:
        cut = (n - 1) // 2
    out: dict[str, np.ndarray] = {}
    for key, ref in items[0].items():
        ordered = np.sort(stack(items, key), axis=0)
        out[key] = ordered[cut : n - cut].mean(axis=0).astype(ref.dtype)
    return out


AGGREGATOR = Aggregator(name="trimmed_mean", options=TrimOptions, fn=trimmed_mean)
