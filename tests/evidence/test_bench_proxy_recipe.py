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
    # "mixed" is right on the first four candidates and reversed on the last two
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


def test_best_of_takes_each_candidates_best_score_and_sums_the_cost() -> None:
    recipe = _bench("proxy_recipe")
    ids = ["a", "b", "c"]
    low = recipe.Recipe("lr 0.01", pd.Series([0.5, 0.1, 0.7], index=ids), 4.0, 1.5)
    high = recipe.Recipe("lr 0.1", pd.Series([0.2, 0.6, 0.7], index=ids), 4.0, 0.5)
    both = recipe.best_of("search=lr 0.01, lr 0.1", [low, high])
    assert both.label == "search" and both.scores.tolist() == [0.5, 0.6, 0.7]  # by hand
    assert (both.mb_per_candidate, both.seconds_per_candidate) == (8.0, 2.0)
    with pytest.raises(recipe.RunError, match="no --run is labelled 'lr 1'"):
        recipe.best_of("search=lr 0.01,lr 1", [low, high])
    with pytest.raises(recipe.RunError, match="two --run labels or more"):
        recipe.best_of("search=lr 0.01", [low, high])


def test_best_of_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _bench("proxy_recipe")
    truth = np.linspace(0.5, 0.9, 8)
    # each run is right on one half of the candidates and reversed on the other; their best
    # per candidate is right everywhere (the reversed half scores below the right half)
    first = np.r_[truth[:4], 1.5 - truth[4:]] - np.r_[np.zeros(4), np.ones(4)]
    second = np.r_[-truth[:4], truth[4:]]
    one = _run(tmp_path, "one", first, truth, 1.0)
    two = _run(tmp_path, "two", second, truth, 2.0)
    out = tmp_path / "recipes.md"
    args = ["--out", str(out), "--run", one, "--run", two, "--splits", "2", "--boot", "20"]
    assert recipe.main([*args, "--best-of", "both=one,two"]) == 0
    text = capsys.readouterr().out
    row = next(r for r in text.splitlines() if r.startswith("| both |"))
    assert row.startswith("| both | 1.00 [") and row.endswith("| 3.00 | 3.00 |")
    assert recipe.main([*args, "--best-of", "both=one,three"]) == 2
    assert "no --run is labelled 'three'" in capsys.readouterr().err


def test_a_pick_made_on_the_reporting_half_would_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """X ranks half A right and half B reversed, Y the opposite: picked on A, X is reported on B
    (τ −1), and picked on B, Y on A (τ −1). A pick that saw the reported half would show +1."""
    recipe = _bench("proxy_recipe")
    n = 12
    a, _ = recipe.halves(n, seed=0)
    truth = np.linspace(0.5, 0.9, n)
    on_a = np.isin(np.arange(n), a)
    x = _run(tmp_path, "x", np.where(on_a, truth, -truth), truth, 1.0)
    y = _run(tmp_path, "y", np.where(on_a, -truth, truth), truth, 1.0)
    out = tmp_path / "recipes.md"
    assert recipe.main(["--out", str(out), "--run", x, "--run", y, "--splits", "1"]) == 0
    held = [r for r in capsys.readouterr().out.splitlines() if r.startswith(("| A (", "| B ("))]
    assert [r.split(" | ")[1] for r in held] == ["x", "y"]
    assert [r.split(" | ")[3].split()[0] for r in held] == ["-1.00", "-1.00"]


def test_more_runs_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _bench("proxy_recipe")
    truth = np.linspace(0.5, 0.9, 8)
    one = _run(tmp_path, "one", truth, truth, 1.0)
    base = ["--out", str(tmp_path / "recipes.md"), "--run", one]
    cases = {
        "no_bytes": ("distdd_e30_bytes", "has no column 'distdd_e30_bytes'"),
        "no_truth": ("truth", "has no column 'truth'"),
    }
    for name, (dropped, message) in cases.items():
        (tmp_path / name).mkdir()
        pd.read_csv(tmp_path / "one" / "proxies.csv").drop(columns=dropped).to_csv(
            tmp_path / name / "proxies.csv", index=False
        )
        assert recipe.main([*base, "--run", f"{name}={tmp_path / name}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert recipe.main([*base, "--run", f"x={tmp_path / 'one'}:distdd_e99"]) == 2
    assert "has no column 'distdd_e99'" in capsys.readouterr().err
    assert recipe.main([*base, "--run", f"one={tmp_path / 'one'}"]) == 2
    assert "label 'one' twice" in capsys.readouterr().err
    assert recipe.main([*base, "--splits", "0"]) == 2
    assert "--splits 0 < 1" in capsys.readouterr().err
    assert recipe.main([*base, "--best-of", "both=one"]) == 2
    assert "two --run labels or more" in capsys.readouterr().err
    assert not (tmp_path / "recipes.md").exists()  # nothing written on a bad input
