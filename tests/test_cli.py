"""CLI: the partition and fedavg stages end to end, and every bad input → one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from distdd_nas.cli import main
from tests.conftest import SMOKE


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_partition_writes_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "partition", str(SMOKE), "--out", str(tmp_path))
    assert code == 0 and "partition" in out
    summary = json.loads((tmp_path / "partition" / "summary.json").read_text())
    counts = pd.read_csv(tmp_path / "partition" / "class_counts.csv")
    assert summary["num_clients"] == 4 == len(counts)
    assert counts.drop(columns="client").to_numpy().sum() == summary["train_examples"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["partition"]["num_clients"] == 4 and "fingerprint" in config
    assert (tmp_path / "partition" / "manifest.json").exists()


def test_fedavg_smoke_writes_summary_and_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "fedavg", str(SMOKE), "--out", str(tmp_path), "--set", "fedavg.rounds=3"
    )
    assert code == 0 and "test_accuracy" in out
    stage = tmp_path / "fedavg"
    summary = json.loads((stage / "summary.json").read_text())
    for key in ("test_accuracy", "rounds", "num_clients", "bytes_up", "bytes_down", "wall_s"):
        assert key in summary
    assert summary["rounds"] == 3
    history = pd.read_csv(stage / "history.csv")
    ledger = pd.read_csv(stage / "ledger.csv")
    assert len(history) == 3
    assert ledger.loc[ledger.direction == "up", "bytes"].sum() == summary["bytes_up"]


def test_fedavg_smoke_study_reaches_90_percent(tmp_path: Path) -> None:
    """The shipped smoke study, unchanged: FedAvg on digits reaches >= 90 % test accuracy."""
    assert main(["fedavg", str(SMOKE), "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "fedavg" / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.90


BAD_INPUTS = [
    (["fedavg", "studies/nope.toml"], "study file 'studies/nope.toml' not found"),
    (["fedavg", str(SMOKE), "--set", "fedavg.rouns=3"], "unknown key 'fedavg.rouns'"),
    (
        ["fedavg", str(SMOKE), "--set", "fedavg.rounds=-1"],
        "fedavg.rounds: Input should be greater",
    ),
    (["fedavg", str(SMOKE), "--set", "model.act=gelu"], "model.act: Input should be"),
    (["partition", str(SMOKE), "--set", "fedavg.rounds"], "bad override 'fedavg.rounds'"),
    (
        [
            "partition",
            str(SMOKE),
            "--set",
            "data.name=mnist",
            "--set",
            "data.root=/nonexistent/mnist",
        ],
        "mnist",
    ),
    (["fedavg"], "the following arguments are required: study"),
    (["frobnicate", str(SMOKE)], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--out", str(tmp_path)] if len(argv) > 1 else []
    code, _, err = run_cli(capsys, *argv, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("distdd-nas")
    assert "error: " in lines[0] and message in lines[0]
    assert "Traceback" not in err


def test_real_entry_point_bad_input(tmp_path: Path) -> None:
    """The console entry point itself (not just main()): exit code 2, one line, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distdd_nas.cli",
            "fedavg",
            str(SMOKE),
            "--out",
            str(tmp_path),
            "--set",
            "partition.num_clients=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "partition.num_clients: Input should be greater than or equal to 1" in proc.stderr
    assert not (tmp_path / "fedavg").exists()


def test_failed_rerun_keeps_previous_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "partition", str(SMOKE), "--out", str(tmp_path))[0] == 0
    before = (tmp_path / "partition" / "summary.json").read_text()
    code, _, _ = run_cli(
        capsys,
        "partition",
        str(SMOKE),
        "--out",
        str(tmp_path),
        "--set",
        "partition.min_size=100000",
    )
    assert code == 2
    assert (tmp_path / "partition" / "summary.json").read_text() == before
