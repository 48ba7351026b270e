"""The unit that crosses the server/client boundary, and how its size is counted.

A :class:`Message` mirrors Flower's record types: ``arrays`` (tensors, metered byte for byte, like
Flower's ``ArrayRecord``) and ``config`` (a few scalars such as seeds and learning rates, like
``ConfigRecord``). Only ``arrays`` count towards the communication ledger, which is the same
convention as Flower's ``ArrayRecord.count_bytes``: configuration scalars are a few dozen bytes
and would only blur the analytical formulas the tests check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Scalar = int | float | str | bool


@dataclass(frozen=True)
class Message:
    """Arrays plus scalar configuration, sent by the server to a client or back."""

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    config: Mapping[str, Scalar] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the array payload (what the ledger meters)."""
        return sum(int(a.nbytes) for a in self.arrays.values())

    def __repr__(self) -> str:
        return (
            f"Message(arrays={len(self.arrays)} tensors, {self.nbytes} bytes, "
            f"config={dict(self.config)!r})"
        )


def as_numpy(arrays: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Convert a mapping of tensors/arrays to contiguous NumPy arrays (zero-copy on CPU), shapes
    kept exactly (0-d buffers such as BatchNorm's ``num_batches_tracked`` stay 0-d)."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()  # type: ignore[union-attr]
        out[key] = np.asarray(value, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    return out
