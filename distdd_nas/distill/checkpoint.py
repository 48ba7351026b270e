"""What a distillation must keep to resume after a kill, exactly.

Every random choice of an outer iteration is derived from the root seed and the iteration
number (the network θ0, the inner-loop batches, each step's client seeds and faults), so the
state at an iteration boundary is small: the synthetic images, the image optimizer's momentum,
the history rows, the ledger so far, the census (round 0 is not sent again) and the seconds
spent. A run resumed from it produces the same bytes as an uninterrupted one.

A :class:`Checkpointer` stores that state; the distill stage gives one backed by a file next
to the cache entry (:class:`~distdd_nas.stages.distill.FileCheckpointer`); the loop itself
never touches paths. The payload holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)`` (no arbitrary pickles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from distdd_nas.errors import ArtifactError
from distdd_nas.federation import Ledger, LedgerRow


@dataclass
class DistillState:
    """The loop's state after ``iterations_done`` outer iterations."""

    iterations_done: int
    images: torch.Tensor
    optimizer: dict[str, Any]
    rows: list[dict[str, float]]
    ledger: Ledger
    counts: np.ndarray
    moments: list[dict[str, np.ndarray]]
    elapsed_s: float

    def to_payload(self) -> dict[str, Any]:
        """Tensors and plain values only (``weights_only`` loadable)."""
        return {
            "iterations_done": self.iterations_done,
            "images": self.images.detach().clone(),
            "optimizer": self.optimizer,
            "rows": self.rows,
            "ledger": [
                (r.round, r.client, r.direction, r.kind, r.bytes) for r in self.ledger.rows
            ],
            "counts": torch.from_numpy(np.asarray(self.counts)),
            "moments": [
                {k: torch.from_numpy(np.asarray(v)) for k, v in m.items()} for m in self.moments
            ],
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> DistillState:
        try:
            return cls(
                iterations_done=int(data["iterations_done"]),
                images=data["images"],
                optimizer=data["optimizer"],
                rows=list(data["rows"]),
                ledger=Ledger([LedgerRow(*row) for row in data["ledger"]]),
                counts=data["counts"].numpy(),
                moments=[{k: v.numpy() for k, v in m.items()} for m in data["moments"]],
                elapsed_s=float(data["elapsed_s"]),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ArtifactError(f"the distillation checkpoint is malformed ({err!r})") from None


class Checkpointer(Protocol):
    """Stores the state of one distillation (one identity) between processes.

    ``load`` returns the last saved state, or None when there is none; ``save`` replaces it
    atomically (a kill during ``save`` leaves the previous state); ``clear`` removes it once
    the result is safely stored elsewhere.
    """

    def load(self) -> DistillState | None: ...

    def save(self, state: DistillState) -> None: ...

    def clear(self) -> None: ...


__all__ = ["Checkpointer", "DistillState"]
