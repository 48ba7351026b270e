"""Server-side aggregation of client replies: one file per aggregator, one registry.

A study names an aggregator by string (``aggregator = "median"``) or as a table with its options
(``aggregator = { name = "trimmed_mean", trim = 0.2 }``); :func:`make_aggregator` turns either
into the ``combine(items, weights)`` function the server algorithms call. Every aggregator runs
behind the :mod:`~.guard` (bounded weights and deviations), whose two options any table may set
(``{ name = "mean", max_deviation_ratio = 0 }`` turns that bound off). Adding an aggregator
is one new file defining ``AGGREGATOR`` (see :class:`~.base.Aggregator`) plus its line in
:data:`AGGREGATORS` below; config validation and error messages read the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import centered_clip, krum, mean, median, trimmed_mean
from distdd_nas.federation.aggregators.base import Aggregator, Arrays, Combine, drop_non_finite
from distdd_nas.federation.aggregators.guard import (
    CLASS_GRADIENT_GUARD,
    DEFAULT_GUARD,
    GUARD_OPTIONS,
    Guard,
)

#: Name → aggregator, the one list of what a study may choose.
AGGREGATORS: dict[str, Aggregator] = {
    a.name: a
    for a in (
        mean.AGGREGATOR,
        median.AGGREGATOR,
        trimmed_mean.AGGREGATOR,
        krum.AGGREGATOR,
        centered_clip.AGGREGATOR,
    )
}
#: What a study writes: a name, or a table with ``name`` plus options.
AggregatorSpec = str | Mapping[str, Any]

weighted_mean = mean.weighted_mean
coordinate_median = median.coordinate_median


def make_aggregator(spec: AggregatorSpec, *, guard: Guard = DEFAULT_GUARD) -> Combine:
    """The combine function of ``spec`` with its options (and the guard's) bound.

    ``guard``: the guard's defaults for this caller; options in ``spec`` override them.
    DistDD's class gradients use :data:`~.guard.CLASS_GRADIENT_GUARD` (see there).

    Raises:
        ConfigError: Unknown name (the message lists the registry), unknown option (lists the
            aggregator's options), or an option value the aggregator rejects.
    """
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        name, given = str(spec["name"]), {k: v for k, v in spec.items() if k != "name"}
    else:
        raise ConfigError(
            f"aggregator {spec!r} must be a name or a table with a name, e.g. "
            '{ name = "trimmed_mean", trim = 0.2 }'
        )
    entry = AGGREGATORS.get(name)
    if entry is None:
        raise ConfigError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATORS)}")
    known = [f.name for f in fields(entry.options)]
    unknown = sorted(set(given) - set(known) - set(GUARD_OPTIONS))
    if unknown:
        takes = ", ".join([*known, *GUARD_OPTIONS])
        raise ConfigError(f"aggregator {name!r} has no option {unknown[0]!r}; it takes {takes}")
    guard = replace(guard, **{k: v for k, v in given.items() if k in GUARD_OPTIONS})
    options = entry.options(**{k: v for k, v in given.items() if k in known})

    def combine(items: Sequence[Arrays], weights: Sequence[float]) -> dict[str, np.ndarray]:
        return entry.fn(guard.items(items), guard.weights(weights), options)

    return combine


__all__ = [
    "AGGREGATORS",
    "CLASS_GRADIENT_GUARD",
    "Aggregator",
    "AggregatorSpec",
    "Arrays",
    "Combine",
    "Guard",
    "coordinate_median",
    "drop_non_finite",
    "make_aggregator",
    "weighted_mean",
]
