"""bench/proxies.py end to end on a tiny smoke ground-truth table."""

from __future__ import annotations

import copy
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from distdd_nas.cli import main as cli_main
from distdd_nas.config import load_config
from distdd_nas.stages.groundtruth import read_table
from distdd_nas.study import Study
from tests.conftest import REPO, SMOKE


def _bench(name: str) -> ModuleType:
    """Load ``bench/<name>.py`` as a module (bench scripts are not a package)."""
    path = REPO / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _smoke_table(tmp_path: Path, *, candidates: int, rounds: int) -> tuple[Path, list[str]]:
    """A small smoke ground-truth table under ``tmp_path/table`` and the bench arguments that
    name it (study, table, a fresh cache)."""
    table = tmp_path / "table"
    gt = ["--set", f"groundtruth.candidates={candidates}", "--set", f"groundtruth.rounds={rounds}"]
    assert cli_main(["--threads", "1", "groundtruth", str(SMOKE), "--out", str(table), *gt]) == 0
    return table, [
        "--study",
        str(SMOKE),
        "--table",
        str(table),
        "--cache",
        str(tmp_path / "cache"),
    ]


@pytest.mark.timeout(300)
def test_proxies_script_on_a_smoke_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, common = _smoke_table(tmp_path, candidates=6, rounds=4)
    capsys.readouterr()
    argv = [*common, "--epochs", "2", "--epochs-long", "4", "--boot", "100", "--threads", "1"]
    assert _bench("proxies").main(argv) == 0
    out = capsys.readouterr().out
    assert "the table's 6 candidates are this study's plan" in out
    labels = [
        "seed-vs-seed ceiling (FedAvg, other seed, 4 rounds)",
        "DistDD proxy, 2 epochs",
        "DistDD proxy, 4 epochs",
        "random real subset, 2 epochs (centralized reference)",
        "FedAvg after 1 round(s)",
        "FedAvg after 2 round(s)",
        "FedAvg after 4 round(s)",
        "parameter count (larger = better)",
        "NASWOT at init (distilled set)",
    ]
    proxy_part, _, settled = out.partition("## DistDD proxy, 2 epochs against each other proxy")
    rows = [row for row in proxy_part.splitlines() if row.startswith("| ") and "---" not in row]
    body = [r for r in rows if not r.startswith("| proxy ")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in body] == labels * 2  # all, half
    assert body[0].split(" | ")[1] == "6" and body[len(labels)].split(" | ")[1] == "3"
    assert "Kendall τ [90 % CI]" in out and "## Better half (by truth)" in out
    assert "| parameter count (larger = better) | " in settled  # a paired Δτ row per proxy
    settled = settled.partition("## Has the ranking settled by round 4?")[2]
    # rounds 1, 2, 3 of 4 against round 4, same seed
    assert [
        row.split(" | ")[0] for row in settled.splitlines() if row[:3] in ("| 1", "| 2", "| 3")
    ] == ["| 1", "| 2", "| 3"]

    frame = pd.read_csv(table / "proxies.csv")
    assert len(frame) == 6 and frame["candidate_id"].is_unique
    for col in ("truth", "seed_ceiling", "distdd_e2", "distdd_e4", "random_real_e2", "naswot"):
        assert frame[col].notna().all(), col
    assert (frame["distdd_e2_bytes"] > 0).all() and (frame["naswot_bytes"] == 0).all()
    md = (table / "proxies.md").read_text()
    assert md.splitlines()[2].startswith("`python bench/proxies.py --study ")
    assert "Date: " in md and "seed-vs-seed ceiling" in md


@pytest.mark.timeout(300)
def test_search_cost_script_on_a_smoke_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, common = _smoke_table(tmp_path, candidates=8, rounds=3)
    assert (
        _bench("proxies").main([*common, "--epochs", "2", "--epochs-long", "2", "--boot", "50"])
        == 0
    )
    capsys.readouterr()
    argv = [
        *common,
        "--proxy",
        "distdd_e2",
        "--size",
        "6",
        "--repetitions",
        "3",
        "--random-budget",
        "3",
        "--top-k",
        "2",
    ]
    assert _bench("search_cost").main(argv) == 0
    text = (table / "search_cost.md").read_text()
    assert text == capsys.readouterr().out
    for method in (
        "random search, full FedAvg (3 candidates)",
        "FedAvg + successive halving (6 candidates)",
        "FedAvg + hyperband (6 candidates)",
        "DistDD-NAS (proxy on 6, top 2 FedAvg)",
    ):
        assert method in text
    assert "MB sent as the pool grows (computed from the measured per-candidate means" in text
    assert _bench("search_cost").main([*common, "--proxy", "nope"]) == 2
    capsys.readouterr()
    empty = [*common[:-1], str(tmp_path / "empty_cache")]  # common ends with --cache DIR
    assert _bench("search_cost").main([*empty, "--proxy", "distdd_e2"]) == 2
    err = capsys.readouterr().err
    assert "no distilled set of this study in" in err and "--cache" in err


@pytest.mark.timeout(300)
def test_prescored_candidates_are_reused_not_recomputed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, base = _smoke_table(tmp_path, candidates=5, rounds=2)
    common = [*base, "--epochs", "2", "--epochs-long", "3", "--boot", "50"]
    bench = _bench("proxies")
    assert bench.main([*common, "--prescore"]) == 0
    scores = pd.read_csv(table / "proxy_scores.csv")
    assert set(scores["proxy"]) == {"distdd_e2", "distdd_e3", "random_real_e2", "naswot"}
    assert scores.groupby("proxy").size().tolist() == [5, 5, 5, 5]
    before = (table / "proxy_scores.csv").read_bytes()
    capsys.readouterr()
    assert bench.main(common) == 0  # statistics only: every score comes from the cache
    assert (table / "proxy_scores.csv").read_bytes() == before
    frame = pd.read_csv(table / "proxies.csv").set_index("candidate_id")
    cached = scores[scores["proxy"] == "distdd_e2"].set_index("candidate_id")["score"]
    assert (frame.loc[cached.index, "distdd_e2"] == cached).all()

    # Subset sizes: the product's proxy plus random real subsets of 5 (the smoke study's ipc,
    # so the same subset as the default reference, scored again) and 2 images per class.
    capsys.readouterr()
    assert bench.main([*common, "--product-only", "--real-ipc", "5", "2"]) == 0
    out = capsys.readouterr().out.partition("## Better half")[0]
    labels = [r.split(" | ")[0].removeprefix("| ") for r in out.splitlines() if r[:2] == "| "]
    assert labels[1:5] == [
        "seed-vs-seed ceiling (FedAvg, other seed, 2 rounds)",
        "DistDD proxy, 2 epochs",
        "random real subset, 5 per class, 2 epochs",
        "random real subset, 2 per class, 2 epochs",
    ]
    assert "(centralized reference)" not in out and "NASWOT at init" not in out
    sized = pd.read_csv(table / "proxies.csv").set_index("candidate_id")
    default = scores[scores["proxy"] == "random_real_e2"].set_index("candidate_id")["score"]
    assert (sized.loc[default.index, "random_real_e2_ipc5"] == default).all()
    assert not (sized["random_real_e2_ipc2"] == sized["random_real_e2_ipc5"]).all()
    assert bench.main([*common, "--real-ipc", "0"]) == 2
    assert "--real-ipc 0: give sizes >= 1" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_search_cost_replays_a_table_made_under_other_proxy_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Proxy settings change candidate ids, not FedAvg curves: the replay maps the table's ids
    to the study's instead of failing on a missing curve."""
    _, common = _smoke_table(tmp_path, candidates=6, rounds=3)
    assert _bench("proxies").main([*common, "--epochs", "2", "--epochs-long", "2"]) == 0
    capsys.readouterr()
    argv = [
        *common,
        "--set",
        "search.lr=0.02",
        "--proxy",
        "distdd_e2",
        "--size",
        "4",
        "--repetitions",
        "2",
        "--random-budget",
        "2",
        "--top-k",
        "2",
    ]
    assert _bench("search_cost").main(argv) == 0
    assert "FedAvg + successive halving (4 candidates)" in capsys.readouterr().out


@pytest.mark.timeout(300)
def test_fl_hyperparameter_table_scores_simulated_fedavg_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``fedavg.*`` table (one architecture): the proxies are simulated FedAvg with the
    study's batch and with the real local steps, plus the random-real reference; parameter
    count and NASWOT (constant on one architecture) are left out; the header says what not
    tuning costs, computed here from the curves by hand; the search-cost replay runs on it."""
    space = ["--set", 'search.space="fedavg_hparams"', "--set", "fedavg.rounds=2"]
    space += ["--set", "search.virtual_examples=300"]  # of ~1,000 real: the variants differ
    table = tmp_path / "table"
    gt = ["--set", "groundtruth.candidates=5", "--set", "groundtruth.rounds=2", *space]
    assert cli_main(["--threads", "1", "groundtruth", str(SMOKE), "--out", str(table), *gt]) == 0
    common = ["--study", str(SMOKE), "--table", str(table), "--cache", str(tmp_path / "cache")]
    capsys.readouterr()
    assert _bench("proxies").main([*common, *space, "--boot", "50", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [r for r in out.partition("## Better half")[0].splitlines() if r.startswith("| ")]
    labels = [r.split(" | ")[0].removeprefix("| ") for r in rows[1:]]
    assert labels == [
        "seed-vs-seed ceiling (FedAvg, other seed, 2 rounds)",
        "simulated FedAvg on the distilled set, real local steps (the study's setting)",
        "simulated FedAvg on the distilled set, study's batch (fewer steps)",
        "the scaled simulation on a random real subset (centralized reference)",
        "FedAvg after 1 round(s)",
        "FedAvg after 2 round(s)",
    ]
    curves = pd.read_csv(table / "groundtruth" / "curves.csv", dtype={"candidate_id": str})
    final = curves[(curves["replicate"] == 0) & (curves["round"] == 2)].set_index("candidate_id")
    listed = pd.read_csv(table / "groundtruth" / "candidates.csv", dtype={"candidate_id": str})
    ref = final.loc[listed.loc[listed["is_reference"], "candidate_id"].iloc[0], "test_accuracy"]
    best = final["test_accuracy"].max()
    assert f"not tuning costs {100 * (best - ref):.1f} points" in out
    frame = pd.read_csv(table / "proxies.csv")
    assert {"sim_scaled", "sim_real_steps", "random_real_sim"} <= set(frame.columns)
    assert "naswot" not in frame.columns and "param_count" not in frame.columns
    assert (frame["sim_real_steps_bytes"] > 0).all()  # one metered federated evaluation each
    assert not (frame["sim_scaled"] == frame["sim_real_steps"]).all()  # two trainings
    # A direction's run scores the study's own simulation alone (here from the cache).
    argv = [*common, *space, "--boot", "50", "--threads", "1", "--product-only"]
    assert _bench("proxies").main(argv) == 0
    only = capsys.readouterr().out.partition("## Better half")[0]
    assert "real local steps (the study's setting)" in only and "study's batch" not in only
    assert "random real subset" not in only and "FedAvg after 2 round(s)" in only
    assert _bench("proxies").main([*common, *space, "--real-ipc", "3"]) == 2
    assert "only for an architecture table" in capsys.readouterr().err
    argv = [*common, *space, "--proxy", "sim_real_steps", "--size", "5", "--repetitions", "2"]
    argv += ["--random-budget", "2", "--top-k", "2"]
    assert _bench("search_cost").main(argv) == 0
    assert "FedAvg + successive halving (5 candidates)" in capsys.readouterr().out
    paired = (table / "proxies.md").read_text().partition("(paired Δτ)")[0].splitlines()[-1]
    assert "real local steps (the study's setting)" in paired  # the product's default is "ours"


@pytest.mark.timeout(300)
def test_check_plan_warns_only_about_settings_that_changed(tmp_path: Path) -> None:
    """A setting added after the table was made (absent from its plan.json) ran at its default,
    so it is no warning; a setting the truth depends on that differs is one, named."""
    table_dir, _ = _smoke_table(tmp_path, candidates=4, rounds=1)
    bench, study = _bench("proxies"), Study(load_config(SMOKE))
    table = read_table(table_dir)
    assert bench.check_plan(study, table) == ["the table's 4 candidates are this study's plan"]
    older = copy.deepcopy(table.config)
    del older["federation"]["round_retries"]  # a table from before the setting existed
    assert bench.check_plan(study, replace(table, config=older)) == [
        "the table's 4 candidates are this study's plan"
    ]
    other = copy.deepcopy(table.config)
    other["partition"]["num_clients"] = 7
    (note,) = bench.check_plan(study, replace(table, config=other))
    assert note.startswith("WARNING: the table was made with other partition settings")
