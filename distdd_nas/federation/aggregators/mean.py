"""``mean``: FedAvg's example-weighted mean, Σ_i w_i x_i / Σ_i w_i per coordinate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distdd_nas.errors import EngineError
from distdd_nas.federation.aggregators.base import NO_OPTIONS, Aggregator, Arrays, NoOptions, stack


def weighted_mean(
    items: Sequence[Arrays], weights: Sequence[float], options: NoOptions = NO_OPTIONS
) -> dict[str, np.ndarray]:
    """Σ_i w_i x_i / Σ_i w_i per key, in each key's dtype."""
    del options
    w = np.asarray(weights, dtype=np.float64)
    if len(items) == 0 or w.sum() <= 0:
        raise EngineError("nothing to aggregate: no replies with positive weight; check clients")
    w = w / w.sum()
    return {
        key: np.tensordot(w, stack(items, key), axes=1).astype(ref.dtype, copy=False)
        for key, ref in items[0].items()
    }


AGGREGATOR = Aggregator(name="mean", options=NoOptions, fn=weighted_mean)
