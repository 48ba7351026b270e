"""bench/proxy_blend.py: halves, weight tuning by hand-built cases, the held-out report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.evidence.test_bench_proxies import _bench


def _frame(n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.5, 0.9, n)
    return pd.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(n)],
            "truth": truth,
            "distdd_e100": truth + rng.normal(0, 0.2, n),  # a weak signal
            "distdd_e100_bytes": 4_000_000,
            "fedavg_r1": truth + rng.normal(0, 0.02, n),  # a strong one
            "fedavg_r1_bytes": 8_000_000,
        }
    )


def test_halves_split_every_candidate_once() -> None:
    blend = _bench("proxy_blend")
    a, b = blend.halves(9, seed=3)
    assert len(a) == 5 and len(b) == 4
    assert sorted([*a, *b]) == list(range(9))
    again = blend.halves(9, seed=3)
    assert (again[0] == a).all() and (blend.halves(9, seed=4)[0] != a).any()


def test_tune_picks_the_weight_of_the_proxy_that_is_the_truth() -> None:
    blend = _bench("proxy_blend")
    truth = np.arange(10.0)
    noise = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], dtype=float)
    w = blend.tune(truth, noise, truth)  # the cheap proxy is the truth: the blend must be too
    assert w > 0.5 and blend.kendall_tau(blend.blend(truth, noise, w), truth) == pytest.approx(1)
    assert blend.tune(noise, truth, truth) == 0.0  # FedAvg is: the smallest weight wins
    # by hand: w = 0.5 averages ranks 1..10 with the reversed ranks: every score is 5.5
    assert (blend.blend(truth, truth[::-1], 0.5) == 5.5).all()


def test_held_out_report_and_a_bad_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blend = _bench("proxy_blend")
    _frame().to_csv(tmp_path / "proxies.csv", index=False)
    assert blend.main(["--table", str(tmp_path), "--rounds", "1", "--boot", "100"]) == 0
    text = (tmp_path / "proxy_blend.md").read_text()
    assert text == capsys.readouterr().out
    rows = [r for r in text.splitlines() if r.startswith("| ") and not r.startswith("| proxy")]
    assert [r.split(" | ")[0] for r in rows][1:] == [
        "| distdd_e100 alone",
        "| FedAvg after 1 round(s) alone",
    ]
    assert rows[0].startswith("| blend of distdd_e100 and FedAvg after 1 round(s), w tuned")
    assert rows[0].endswith("| 12.0 |") and rows[1].endswith("| 4.0 |")  # MB per candidate
    assert blend.main(["--table", str(tmp_path), "--rounds", "3"]) == 2
    assert "has no column 'fedavg_r3'" in capsys.readouterr().err
