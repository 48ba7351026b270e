"""A combined architecture + FL-hyper-parameter space (``arch_fedavg``) end to end on the smoke
study: trials vary both kinds of parameter, validation trains each candidate with its own
architecture *and* its own FedAvg settings (checked against an independent ``fedavg`` run of
the recommended candidate), and the report ranks with a finite Kendall τ."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from distdd_nas.cli import main
from tests.conftest import SMOKE

pytestmark = pytest.mark.timeout(600)

FAST = [
    "--set", "search.space=\"arch_fedavg\"",
    "--set", "distill.iterations=2",
    "--set", "distill.eval.epochs=10",
    "--set", "distill.eval.num_models=1",
    "--set", "fedavg.rounds=2",
    "--set", "search.n_trials=4",
    "--set", "validate.top_k=2",
    "--set", "validate.n_random=1",
]  # fmt: skip


def test_arch_fedavg_validates_each_candidate_with_its_own_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["run", str(SMOKE), "--out", str(out), "--cache", str(cache), *FAST]) == 0, (
        capsys.readouterr().err
    )
    trials = pd.read_csv(out / "report" / "trials.csv")
    searched = ["params_arch.depth", "params_arch.width", "params_fedavg.lr"]
    for column in [*searched, "params_fedavg.local_epochs"]:
        assert column in trials.columns, column
    drawn = trials[trials["state"] == "COMPLETE"]
    assert all(drawn[c].nunique() > 1 for c in searched)  # both kinds of parameter vary

    validation = pd.read_csv(out / "validate" / "validation.csv")
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n_validated"] == len(validation) >= 3
    assert math.isfinite(summary["kendall_tau"]) and -1 <= summary["kendall_tau"] <= 1

    # The validated accuracy of a searched candidate is exactly what a FedAvg run with its
    # architecture and its client lr / local epochs reaches (validation's seed is the study's).
    row = validation[validation["selected_as"] == "top"].iloc[0]
    overrides = [
        f"model.depth={int(row['params_arch.depth'])}",
        f"model.width={int(row['params_arch.width'])}",
        f"fedavg.lr={float(row['params_fedavg.lr'])!r}",
        f"fedavg.local_epochs={int(row['params_fedavg.local_epochs'])}",
    ]
    alone = tmp_path / "alone"
    argv = ["fedavg", str(SMOKE), "--out", str(alone), "--set", "fedavg.rounds=2"]
    assert main([*argv, *(a for o in overrides for a in ("--set", o))]) == 0
    history = pd.read_csv(alone / "fedavg" / "history.csv")
    assert float(history["test_accuracy"].iloc[-1]) == row["fedavg_accuracy"]
