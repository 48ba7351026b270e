"""What every aggregator shares: the array type, the non-finite filter, the registry entry.

An aggregator combines a list of array dictionaries (identical keys and shapes), one per reply,
with one weight per reply (example counts), into one dictionary. Replies carrying NaN or Inf are
removed by :func:`drop_non_finite` *before* any aggregator is called, so a single broken client
can never poison a global model or a synthetic set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distdd_nas.errors import EngineError

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
#: ``combine(items, weights) -> arrays``: what a server algorithm calls each round.
Combine = Callable[[Sequence[Arrays], Sequence[float]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Aggregator:
    """A registry entry: a name, the options it takes, and the function.

    Attributes:
        name: What a study writes (``aggregator = "median"``).
        options: A frozen dataclass of the aggregator's parameters with their defaults; its
            ``__post_init__`` raises :class:`~distdd_nas.errors.ConfigError` on a bad value.
        fn: ``fn(items, weights, options) -> arrays``.
    """

    name: str
    options: type
    fn: Callable[[Sequence[Arrays], Sequence[float], Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class NoOptions:
    """For aggregators without parameters."""


NO_OPTIONS = NoOptions()


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


def stack(items: Sequence[Arrays], key: str) -> np.ndarray:
    """The values of ``key`` across replies as one float64 array (reply axis first)."""
    return np.stack([np.asarray(item[key], dtype=np.float64) for item in items])


def require_items(items: Sequence[Arrays]) -> None:
    """Raise the one error every aggregator gives for an empty round."""
    if len(items) == 0:
        raise EngineError("nothing to aggregate: no replies; check clients")
