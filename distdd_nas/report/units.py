"""How numbers read everywhere a person sees them (report, figures, console): bytes in decimal
MB/GB, as the README and network tools count them, and accuracies in percent."""

from __future__ import annotations

import math
from typing import Any


def format_bytes(value: Any) -> str:
    """``12.3 MB`` / ``1.84 GB`` (decimal units); ``n/a`` for a missing or non-finite value."""
    if value is None:
        return "n/a"
    v = float(value)
    if not math.isfinite(v):
        return "n/a"
    if abs(v) < 1e9:
        return f"{v / 1e6:,.1f} MB"
    return f"{v / 1e9:,.2f} GB"


def format_percent(value: Any, digits: int = 1) -> str:
    """An accuracy in [0, 1] as ``87.3 %``; ``n/a`` for a missing or non-finite value."""
    if value is None:
        return "n/a"
    v = float(value)
    return f"{100 * v:.{digits}f} %" if math.isfinite(v) else "n/a"


__all__ = ["format_bytes", "format_percent"]
