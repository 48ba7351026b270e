"""Server-side aggregation of client replies: weighted mean and two robust alternatives.

All aggregators take a list of array dictionaries with identical keys and shapes plus one weight
per reply. Replies carrying NaN or Inf are removed by :func:`drop_non_finite` *before* any of
these is called, so a single broken client can never poison a global model or a synthetic set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from distdd_nas.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
AGGREGATORS = ("mean", "median", "trimmed_mean")


def drop_non_finite(
    replies: Mapping[int, Arrays], *, what: str = "reply"
) -> tuple[dict[int, Arrays], list[int]]:
    """Split replies into finite ones and the ids of those holding NaN/Inf (logged, never used)."""
    kept: dict[int, Arrays] = {}
    rejected: list[int] = []
    for cid, arrays in replies.items():
        if all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
            kept[cid] = arrays
        else:
            rejected.append(cid)
            log.warning("rejected %s of client %d: non-finite values", what, cid)
    return kept, rejected


def _stack(items: Sequence[Arrays], key: str) -> np.ndarray:
    return np.stack([np.asarray(item[key], dtype=np.float64) for item in items])


def weighted_mean(items: Sequence[Arrays], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Σ_i w_i x_i / Σ_i w_i per key (FedAvg's example-weighted mean)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(items) == 0 or w.sum() <= 0:
        raise EngineError("nothing to aggregate: no replies with positive weight; check clients")
    w = w / w.sum()
    out: dict[str, np.ndarray] = {}
    for key, ref in items[0].items():
        stacked = _stack(items, key)
        out[key] = np.tensordot(w, stacked, axes=1).astype(ref.dtype, copy=False)
    return out


def coordinate_median(items: Sequence[Arrays], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Coordinate-wise median (weights ignored: the median is a robust, unweighted statistic)."""
    del weights
    if len(items) == 0:
        raise EngineError("nothing to aggregate: no replies; check clients")
    return {k: np.median(_stack(items, k), axis=0).astype(v.dtype) for k, v in items[0].items()}


def trimmed_mean(
    items: Sequence[Arrays], weights: Sequence[float], *, trim: float = 0.1
) -> dict[str, np.ndarray]:
    """Coordinate-wise mean after dropping the ``trim`` fraction of lowest and highest values."""
    del weights
    n = len(items)
    if n == 0:
        raise EngineError("nothing to aggregate: no replies; check clients")
    cut = int(np.floor(trim * n))
    if 2 * cut >= n:
        cut = (n - 1) // 2
    out: dict[str, np.ndarray] = {}
    for key, ref in items[0].items():
        stacked = np.sort(_stack(items, key), axis=0)
        out[key] = stacked[cut : n - cut].mean(axis=0).astype(ref.dtype)
    return out


def get_aggregator(
    name: str, *, trim: float = 0.1
) -> Callable[[Sequence[Arrays], Sequence[float]], dict[str, np.ndarray]]:
    """Aggregator by name: ``mean`` | ``median`` | ``trimmed_mean``."""
    if name == "mean":
        return weighted_mean
    if name == "median":
        return coordinate_median
    if name == "trimmed_mean":
        if not 0.0 <= trim < 0.5:
            raise ConfigError(f"trim={trim} is out of range; use 0 <= trim < 0.5")
        return lambda items, weights: trimmed_mean(items, weights, trim=trim)
    raise ConfigError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATORS)}")
