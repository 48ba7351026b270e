"""Run outputs: what a ServerApp writes is what the runtimes read back (no Flower needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distdd_nas.errors import EngineError
from distdd_nas.federation.flower.outputs import (
    ENGINE_JSON,
    STATUS_FILE,
    read_ledger,
    read_run_outputs,
    read_status,
    write_run_outputs,
)


def test_outputs_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert read_status(out) is None
    with pytest.raises(EngineError, match="did not finish"):
        read_run_outputs(out)
    result = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "t": torch.tensor([1, 2]),
        "history": {"loss": [0.5, 0.25]},
        "acc": 0.75,
    }
    write_run_outputs(out, result=result, engine=None, info={"finished_at": 1.0})
    assert read_status(out) == {"status": "ok", "error": ""}
    got = read_run_outputs(out)
    assert got.result == {"history": {"loss": [0.5, 0.25]}, "acc": 0.75}
    assert set(got.arrays) == {"w", "t"}
    assert got.arrays["w"].dtype == np.float32
    np.testing.assert_array_equal(got.arrays["w"], result["w"])
    np.testing.assert_array_equal(got.arrays["t"], [1, 2])
    assert got.ledger.rows == [] and got.engine == {"finished_at": 1.0}
    assert not list(out.glob("*.tmp*"))


def test_failed_run_raises_the_server_error(tmp_path: Path) -> None:
    write_run_outputs(
        tmp_path, result=None, engine=None, info={"error": "ValueError: broke", "traceback": "tb"}
    )
    assert json.loads((tmp_path / STATUS_FILE).read_text())["status"] == "error"
    assert json.loads((tmp_path / ENGINE_JSON).read_text())["traceback"] == "tb"
    with pytest.raises(EngineError, match="server function failed: ValueError: broke"):
        read_run_outputs(tmp_path)


def test_read_ledger_refuses_other_csv(tmp_path: Path) -> None:
    assert read_ledger(tmp_path / "missing.csv").rows == []
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(EngineError, match="is not a ledger"):
        read_ledger(tmp_path / "x.csv")
