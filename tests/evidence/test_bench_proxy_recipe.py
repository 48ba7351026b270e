"""bench/proxy_recipe.py: recipe picking by hand-built cases, the held-out report, bad runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.evidence.test_bench_proxies import _bench


def _run(tmp_path: Path, name: str, scores: np.ndarray, truth: np.ndarray, mb: float) -> str:
    """A ``proxies.csv`` like bench/proxies.py --product-only writes; returns its --run."""
    directory = tmp_path / name
    directory.mkdir()
    pd.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(len(truth))],
            "truth": truth,
            "distdd_e30": scores,
            "distdd_e30_bytes": mb * 1e6,
            "distdd_e30_s": 1.5,
        }
    ).to_csv(directory / "proxies.csv", index=False)
    return f"{name}={directory}"


def test_pick_takes_the_recipe_that_ranks_best_on_the_given_candidates() -> None:
    recipe = _bench("proxy_recipe")
    ids = [f"c{i}" for i in range(6)]
    truth = pd.Series(np.arange(6.0), index=ids)
    right = recipe.Recipe("right", truth.copy(), 1.0, 1.0)
    reversed_ = recipe.Recipe("reversed", -truth, 1.0, 1.0)
    # on the first four the "reversed" one is made right by hand; on the rest it is reversed
    mixed = recipe.Recipe("mixed", pd.Series([0, 1, 2, 3, 9, 8.0], index=ids), 1.0, 1.0)
    assert recipe.pick([reversed_, right], truth, ids).label == "right"
    assert recipe.pick([right, mixed], truth, ids[:4]).label == "right"  # a tie: the first
    assert recipe.pick([mixed, right], truth, ids[:4]).label == "mixed"
    assert recipe.pick([mixed, right], truth, ids).label == "right"


def test_the_report_holds_out_what_it_tuned_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _bench("proxy_recipe")
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 0.9, 30)
    good = _run(tmp_path, "good", truth + rng.normal(0, 0.01, 30), truth, 4.0)
    weak = _run(tmp_path, "weak", truth + rng.normal(0, 0.3, 30), truth, 12.0)
    out = tmp_path / "recipes.md"
    args = ["--run", weak, "--run", good, "--out", str(out), "--splits", "5", "--boot", "50"]
    assert recipe.main(args) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    held = [r for r in text.splitlines() if r.startswith(("| A (", "| B ("))]
    assert [r.split(" | ")[1] for r in held] == ["good", "good"]
    assert all("the other 15" in r for r in held)
    assert "10 selections" in text and "picked: good 10." in text
    rows = {r.split(" | ")[0]: r for r in text.splitlines() if r.startswith(("| good", "| weak"))}
    assert rows["| good"].endswith("| 4.00 | 1.50 |")  # MB and s per candidate, as measured
    assert rows["| weak"].endswith("| 12.00 | 1.50 |")
    taus = [float(r.split(" | ")[3].split()[0]) for r in held]
    assert all(0.8 < t <= 1.0 for t in taus)


def test_runs_it_cannot_use_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _bench("proxy_recipe")
    truth = np.linspace(0.5, 0.9, 8)
    one = _run(tmp_path, "one", truth, truth, 1.0)
    out = tmp_path / "recipes.md"
    base = ["--out", str(out), "--run", one]
    assert recipe.main([*base, "--run", "no-equals-sign"]) == 2
    assert "is not LABEL=DIR[:COLUMN]" in capsys.readouterr().err
    assert recipe.main([*base, "--run", f"x={tmp_path / 'absent'}"]) == 2
    assert "proxies.csv does not exist; run bench/proxies.py" in capsys.readouterr().err
    other = _run(tmp_path, "other", truth, truth + 0.01, 1.0)
    assert recipe.main([*base, "--run", other]) == 2
    assert "every run must be made on a copy of the same table" in capsys.readouterr().err
    two = tmp_path / "two"
    two.mkdir()
    frame = pd.read_csv(tmp_path / "one" / "proxies.csv")
    frame["distdd_e100"], frame["distdd_e100_bytes"], frame["distdd_e100_s"] = truth, 1.0, 1.0
    frame.to_csv(two / "proxies.csv", index=False)
    assert recipe.main([*base, "--run", f"two={two}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name one as LABEL=DIR:COLUMN" in err
    assert recipe.main([*base, "--run", f"two={two}:distdd_e100"]) == 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp files left
