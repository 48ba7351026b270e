"""``median``: the coordinate-wise median, a robust and unweighted statistic (a client can move
it only as far as the honest clients' spread allows, whatever it sends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distdd_nas.federation.aggregators.base import (
    NO_OPTIONS,
    Aggregator,
    Arrays,
    NoOptions,
    require_items,
    stack,
)


def coordinate_median(
    items: Sequence[Arrays], weights: Sequence[float], options: NoOptions = NO_OPTIONS
) -> dict[str, np.ndarray]:
    """Coordinate-wise median over replies (weights ignored)."""
    del weights, options
    require_items(items)
    return {k: np.median(stack(items, k), axis=0).astype(v.dtype) for k, v in items[0].items()}


AGGREGATOR = Aggregator(name="median", options=NoOptions, fn=coordinate_median)
