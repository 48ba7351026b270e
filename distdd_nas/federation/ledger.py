"""The communication ledger: every payload that crosses an engine, one row each.

Engines append rows at the boundary where a payload leaves the server (``down``) or arrives from a
client (``up``), so the figures in every report are measurements, not estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

Direction = Literal["down", "up"]
COLUMNS = ("round", "client", "direction", "kind", "bytes")


@dataclass(frozen=True)
class LedgerRow:
    """One metered payload."""

    round: int
    client: int
    direction: Direction
    kind: str
    bytes: int


@dataclass
class Ledger:
    """Append-only list of :class:`LedgerRow` with totals and a pandas view."""

    rows: list[LedgerRow] = field(default_factory=list)

    def record(
        self, *, round: int, client: int, direction: Direction, kind: str, nbytes: int
    ) -> None:
        """Append one metered payload."""
        self.rows.append(LedgerRow(round, client, direction, kind, int(nbytes)))

    def total(self, direction: Direction | None = None, kind: str | None = None) -> int:
        """Sum of bytes, optionally restricted to one direction and/or one task kind."""
        return sum(
            r.bytes
            for r in self.rows
            if (direction is None or r.direction == direction) and (kind is None or r.kind == kind)
        )

    @property
    def bytes_up(self) -> int:
        return self.total("up")

    @property
    def bytes_down(self) -> int:
        return self.total("down")

    def to_frame(self) -> pd.DataFrame:
        """All rows as a DataFrame with columns round, client, direction, kind, bytes."""
        return pd.DataFrame([r.__dict__ for r in self.rows], columns=list(COLUMNS))

    def per_round(self) -> pd.DataFrame:
        """Bytes per (kind, round, direction), the basis of cost extrapolation."""
        frame = self.to_frame()
        return frame.groupby(["kind", "round", "direction"], as_index=False)["bytes"].sum()

    def extend(self, other: Ledger) -> None:
        """Append another ledger's rows (e.g. validation after distillation)."""
        self.rows.extend(other.rows)
