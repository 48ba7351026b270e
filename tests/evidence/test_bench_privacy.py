"""bench/privacy.py end to end on a tiny smoke ground-truth table: a private row is measured
with the accountant's ε within its target, the table marks the others pending, and a re-run
measures nothing twice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.evidence.test_bench_proxies import _bench, _smoke_table


@pytest.mark.timeout(300)
def test_privacy_script_measures_a_private_row_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, common = _smoke_table(tmp_path, candidates=5, rounds=2)
    out = tmp_path / "privacy"
    small = ["--set", "distill.iterations=2", "--set", "distill.eval.num_models=1",
             "--set", "distill.eval.epochs=2"]  # fmt: skip
    argv = [*common, "--out", str(out), *small, "--epochs", "2", "--boot", "50", "--only", "8"]
    privacy = _bench("privacy")
    assert privacy.main(argv) == 0
    units = pd.read_csv(out / "units.csv", dtype={"epsilon": str})
    assert len(units) == 1 and units.loc[0, "epsilon"] == "8"
    row = units.iloc[0]
    assert 7.9 <= row["dp_epsilon"] <= 8.0 and row["dp_noise_multiplier"] > 0
    assert row["dp_clip"] == 1.0 and row["n"] == 5 and -1 <= row["tau"] <= 1
    assert row["tau_low"] <= row["tau"] <= row["tau_high"]
    scores = pd.read_csv(out / "proxy_scores.csv")
    assert set(scores["proxy"]) == {"distdd_e2"} and len(scores) == 5
    table = (out / "privacy.md").read_text()
    assert "bench/privacy.py" in table and table.count("pending") == 3
    capsys.readouterr()
    assert privacy.main(argv) == 0  # resumes: nothing left to measure
    assert len(pd.read_csv(out / "units.csv")) == 1
    assert "ε=" not in capsys.readouterr().out  # no unit line printed
