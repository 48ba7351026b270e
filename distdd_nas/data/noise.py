"""Mislabeled clients: symmetric or pair-flip label noise on a seeded subset of clients.

Real federations have clients with poor labels; a search whose proxy ranks architectures well
on clean clients may not on noisy ones. :func:`apply_label_noise` corrupts a known number of
labels on a known set of clients and returns a :class:`NoiseRecord` saying exactly which, so
reports can relate ranking quality to data quality. The input labels are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from distdd_nas.data.partition import FederatedSplit
from distdd_nas.errors import ConfigError, DataError
from distdd_nas.seeding import numpy_rng


@dataclass(frozen=True)
class NoiseRecord:
    """Which clients got noisy labels and how many of their labels changed.

    Attributes:
        kind: ``none``, ``symmetric`` or ``pair``.
        rate: Share of each noisy client's labels that changed (0 for ``none``).
        noisy_clients: Sorted ids of the clients chosen to be noisy.
        changed_per_client: Number of changed labels per noisy client.
    """

    kind: str
    rate: float
    noisy_clients: tuple[int, ...] = ()
    changed_per_client: dict[int, int] = field(default_factory=dict)

    @property
    def total_changed(self) -> int:
        """Number of labels changed over all clients."""
        return sum(self.changed_per_client.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (client ids become string keys, as JSON requires)."""
        return {
            "kind": self.kind,
            "rate": self.rate,
            "noisy_clients": list(self.noisy_clients),
            "changed_per_client": {str(k): v for k, v in self.changed_per_client.items()},
        }

    def to_frame(self, num_clients: int) -> pd.DataFrame:
        """One row per client (index ``client``): columns ``noisy`` (bool) and ``changed``."""
        clients = range(num_clients)
        frame = pd.DataFrame(
            {
                "noisy": [c in self.noisy_clients for c in clients],
                "changed": [self.changed_per_client.get(c, 0) for c in clients],
            }
        )
        frame.index.name = "client"
        return frame


def _round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (unlike Python's round-half-to-even)."""
    return math.floor(x + 0.5)


def _check_arguments(*, kind: str, rate: float, client_fraction: float, num_classes: int) -> None:
    """ConfigError for an unknown kind or out-of-range numbers."""
    if kind not in NOISE_KINDS:
        raise ConfigError(
            f"unknown noise kind {kind!r}; set noise.kind to one of {', '.join(NOISE_KINDS)}"
        )
    for name, value in (("rate", rate), ("client_fraction", client_fraction)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"noise.{name}={value} is out of range; use 0 <= {name} <= 1")
    if kind != "none" and num_classes < 2:
        raise ConfigError(
            f"label noise needs at least 2 classes, got num_classes={num_classes}; "
            'set noise.kind = "none"'
        )


def _check_data(labels: np.ndarray, split: FederatedSplit, *, num_classes: int) -> None:
    """DataError when the labels do not fit the split or the number of classes."""
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}; pass the label vector")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels span {labels.min()}..{labels.max()} but num_classes={num_classes}; "
            "pass the dataset's number of classes"
        )
    top = max((int(idx.max()) for idx in split.client_indices if idx.size), default=-1)
    if top >= len(labels):
        raise DataError(
            f"the split indexes example {top} but there are {len(labels)} labels; pass the "
            "labels of the dataset the split was made for"
        )


def _pair(old: np.ndarray, *, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class c becomes (c + 1) mod C (draws nothing)."""
    return (old + 1) % num_classes


def _symmetric(old: np.ndarray, *, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """An offset in 1..C-1 reaches every other class with equal probability."""
    return (old + rng.integers(1, num_classes, size=len(old))) % num_classes


#: Label-noise kinds by name (``noise.kind``): flip(old labels, num_classes, rng) → new labels,
#: each different from the old one; ``none`` changes nothing.
NOISE_KINDS: dict[str, Callable[..., np.ndarray] | None] = {
    "none": None,
    "symmetric": _symmetric,
    "pair": _pair,
}


def apply_label_noise(
    labels: np.ndarray,
    split: FederatedSplit,
    *,
    kind: str,
    rate: float,
    client_fraction: float,
    num_classes: int,
    seed: int,
) -> tuple[np.ndarray, NoiseRecord]:
    """Return a noisy copy of ``labels`` and the record of what changed.

    ``round(client_fraction × n)`` clients are chosen (seeded); on each chosen client with
    n_i examples exactly ``round(rate × n_i)`` distinct labels change (halves round up).
    ``symmetric`` sends a changed label to a uniformly random *other* class; ``pair`` sends
    class c to (c + 1) mod C. Each client draws from its own stream, so the noise of one
    client does not depend on the others.

    Raises:
        ConfigError: Unknown kind, rate or client_fraction outside [0, 1], fewer than 2 classes.
        DataError: Labels that do not fit the split or ``num_classes``.
    """
    _check_arguments(
        kind=kind, rate=rate, client_fraction=client_fraction, num_classes=num_classes
    )
    out = np.array(labels, dtype=np.int64, copy=True)
    _check_data(out, split, num_classes=num_classes)
    flip = NOISE_KINDS[kind]
    if flip is None:
        return out, NoiseRecord(kind="none", rate=0.0)
    n = split.num_clients
    picked = numpy_rng(seed, "noise", "clients").choice(
        n, size=_round_half_up(client_fraction * n), replace=False
    )
    chosen = tuple(sorted(int(c) for c in picked))
    changed: dict[int, int] = {}
    for cid in chosen:
        idx = split.client_indices[cid]
        rng = numpy_rng(seed, "noise", "client", cid)
        where = rng.choice(idx, size=_round_half_up(rate * len(idx)), replace=False)
        out[where] = flip(out[where], num_classes=num_classes, rng=rng)
        changed[cid] = len(where)
    record = NoiseRecord(kind=kind, rate=rate, noisy_clients=chosen, changed_per_client=changed)
    return out, record
