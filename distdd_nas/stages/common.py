"""What every stage shares: its outcome, the progress callback, the resolved config file, and
the config sections each stage's output depends on (its fingerprint)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distdd_nas.artifacts import write_atomic
from distdd_nas.config import StudyConfig, fingerprint

#: Progress callback: (steps done, steps total, latest metrics).
Progress = Callable[[int, int, dict[str, float]], None]

#: Config sections each stage's output depends on.
PARTITION_SECTIONS = ("study", "data", "partition", "noise")
FEDAVG_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "fedavg")
DISTILL_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "distill")
VALIDATE_SECTIONS = (*DISTILL_SECTIONS, "search", "fedavg", "validate")


@dataclass(frozen=True)
class StageOutcome:
    """What a stage wrote: its directory and the summary it stored as summary.json."""

    path: Path
    summary: dict[str, Any]


def write_config(config: StudyConfig, out: Path) -> None:
    """Write the resolved configuration beside the outputs (plain JSON, with its fingerprint)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"fingerprint": fingerprint(config), **config.to_dict()}
    write_atomic(out / "config.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
