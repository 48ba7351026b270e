"""The output files of a Flower run: written by the ServerApp, read back by the runtimes.

The ServerApp (:mod:`distdd_nas.federation.flower.apps`) writes to the run's ``out_dir``: the
server function's result (``result.json`` + ``result.npz``), the communication ledger
(``ledger.csv``), the engine's record (``engine.json``: timestamps, node map, per-round
timings) and ``status.json`` — written last, so a run without it did not finish. Every file is
written atomically (temporary file, then rename); there are no pickles.

This module needs neither Flower nor any other runtime, so the outputs of a run can be read
anywhere.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from distdd_nas.artifacts import json_default, write_atomic
from distdd_nas.errors import EngineError
from distdd_nas.federation.ledger import COLUMNS, Ledger, LedgerRow
from distdd_nas.federation.message import as_numpy

if TYPE_CHECKING:
    from distdd_nas.federation.flower.engine import FlowerEngine

STATUS_FILE = "status.json"
RESULT_JSON = "result.json"
RESULT_NPZ = "result.npz"
LEDGER_CSV = "ledger.csv"
ENGINE_JSON = "engine.json"


@dataclass(frozen=True)
class FlowerRunResult:
    """What a Flower run produced, read back from its output directory.

    Attributes:
        out_dir: the run's directory.
        result: the JSON part of the server function's return value.
        arrays: the array part (top-level array values), from ``result.npz``.
        ledger: every metered payload of the run.
        engine: the ServerApp's record: timestamps, node map, per-round timings.
        timings: seconds measured by the runner: ``startup`` (call → engine ready),
            ``rounds`` (engine ready → server function done), ``teardown``, ``total``, plus
            runtime-specific entries.
        pids: every process id the runner saw belong to the run (all stopped on return).
    """

    out_dir: Path
    result: dict[str, Any]
    arrays: dict[str, np.ndarray]
    ledger: Ledger
    engine: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    pids: tuple[int, ...] = ()


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n"


def write_run_outputs(
    out_dir: Path,
    *,
    result: Mapping[str, Any] | None,
    engine: FlowerEngine | None,
    info: Mapping[str, Any],
) -> None:
    """Write result, ledger and engine record to ``out_dir``; ``status.json`` last.

    Top-level array values of ``result`` (NumPy arrays or tensors) go to ``result.npz``, the
    rest to ``result.json``. ``info`` holding an ``"error"`` key marks the run as failed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for key, value in dict(result or {}).items():
        if isinstance(value, np.ndarray) or hasattr(value, "detach"):
            arrays[key] = value
        else:
            plain[key] = value
    write_atomic(out_dir / RESULT_JSON, _json_text(plain))
    buffer = io.BytesIO()
    np.savez(buffer, **as_numpy(arrays))  # type: ignore[arg-type]
    write_atomic(out_dir / RESULT_NPZ, buffer.getvalue())
    record: dict[str, Any] = dict(info)
    if engine is not None:
        write_atomic(out_dir / LEDGER_CSV, engine.ledger.to_frame().to_csv(index=False))
        record["discovery_seconds"] = engine.discovery_seconds
        record["node_ids"] = {str(c): str(n) for c, n in engine.node_ids.items()}
        record["rounds"] = [asdict(t) for t in engine.timings]
    write_atomic(out_dir / ENGINE_JSON, _json_text(record))
    status = {"status": "error" if "error" in info else "ok", "error": info.get("error", "")}
    write_atomic(out_dir / STATUS_FILE, json.dumps(status) + "\n")


def read_status(out_dir: Path) -> dict[str, Any] | None:
    """``status.json`` of a run, or None while the run has not finished."""
    try:
        data = json.loads((out_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_ledger(path: Path) -> Ledger:
    """A ledger written as CSV by :func:`write_run_outputs` (empty when there is none)."""
    if not path.is_file():
        return Ledger()
    frame = pd.read_csv(path)
    if list(frame.columns) != list(COLUMNS):
        raise EngineError(f"{path} is not a ledger (columns {list(frame.columns)})")
    return Ledger(
        rows=[
            LedgerRow(
                int(r["round"]), int(r["client"]), r["direction"], str(r["kind"]), int(r["bytes"])
            )
            for r in frame.to_dict("records")
        ]
    )


def read_run_outputs(out_dir: Path) -> FlowerRunResult:
    """Read a finished run; raise :class:`EngineError` with the server's error when it failed."""
    status = read_status(out_dir)
    if status is None:
        raise EngineError(
            f"the Flower run wrote no {STATUS_FILE} in {out_dir}; it did not "
            "finish — see the logs there"
        )
    engine = json.loads((out_dir / ENGINE_JSON).read_text(encoding="utf-8"))
    if status.get("status") != "ok":
        raise EngineError(
            f"the Flower server function failed: {status.get('error')}; "
            f"traceback in {out_dir / ENGINE_JSON}"
        )
    result = json.loads((out_dir / RESULT_JSON).read_text(encoding="utf-8"))
    with np.load(out_dir / RESULT_NPZ, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return FlowerRunResult(
        out_dir=out_dir,
        result=result,
        arrays=arrays,
        ledger=read_ledger(out_dir / LEDGER_CSV),
        engine=engine,
    )


__all__ = [
    "ENGINE_JSON",
    "LEDGER_CSV",
    "RESULT_JSON",
    "RESULT_NPZ",
    "STATUS_FILE",
    "FlowerRunResult",
    "read_ledger",
    "read_run_outputs",
    "read_status",
    "write_run_outputs",
]
