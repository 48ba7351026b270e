"""What every stage shares: its outcome, the progress callback, the resolved config file, and
the config sections each stage's output depends on (its fingerprint)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from distdd_nas.artifacts import write_atomic
from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.distill import compiles


class Progress(Protocol):
    """Where a stage says how far it is (the CLI draws bars from it; the library never prints).

    ``task`` names the phase: ``distil`` (iterations), ``evaluate`` (networks trained on the
    distilled set and on random real subsets), ``search`` (trials), ``validate`` (candidates),
    ``fedavg`` (rounds), ``groundtruth`` (trainings). ``done`` of ``total`` units are finished;
    a call with ``done == 0`` announces the phase, one with ``done == total`` ends it; ``info``
    holds the latest metrics (e.g. ``test_accuracy``, ``best``).
    """

    def __call__(self, task: str, done: int, total: int, info: Mapping[str, float]) -> None: ...


#: Config sections each stage's output depends on.
PARTITION_SECTIONS = ("study", "data", "partition", "noise")
FEDAVG_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "fedavg")
DISTILL_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "distill")
VALIDATE_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "search", "fedavg", "validate")


def distilled_fingerprint(config: StudyConfig, *, extra: object = None) -> str:
    """What a distilled set depends on: the federation, the model and the ``distill`` settings
    except its evaluation protocol (``distill.eval`` shapes the distill stage's report, not the
    set), so changing how the set is evaluated neither re-distils nor renames a search; and
    torch's intra-op thread count (``--threads``) and whether the inner loop is compiled
    (``distill.compile`` as it resolves), which change float rounding and so the bytes of the
    set. Only a compiled run adds the latter, so eager sets keep the keys they had before the
    setting existed, and ``"auto"`` shares its key with what it resolves to."""
    distill = config.distill.model_dump(mode="json", exclude={"eval", "compile"})
    parts = {"distill": distill, "extra": extra, "threads": torch.get_num_threads()}
    if compiles(config.distill):
        parts["compiled"] = True
    return fingerprint(config, (*PARTITION_SECTIONS, "model", "federation"), extra=parts)


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
