"""``run`` as a user meets it: an FL-hyper-parameter search on the smoke study, end to end, with
output to a file (not a terminal); the report answers first; a second run retrains nothing;
Optuna's own tools (optuna.visualization, optuna-dashboard) see the real FedAvg accuracy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pandas as pd
import pytest

from tests.conftest import SMOKE

FAST = [
    "--set", "search.space=\"fedavg_hparams\"",
    "--set", "distill.iterations=2",
    "--set", "distill.eval.epochs=10",
    "--set", "distill.eval.num_models=1",
    "--set", "fedavg.rounds=2",
    "--set", "validate.top_k=2",
    "--set", "validate.n_random=1",
]  # fmt: skip
STAGES = ("distill", "search", "validate", "report")


def _run(out: Path, cache: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    where = ["--out", str(out), "--cache", str(cache)]
    proc = subprocess.run(
        [sys.executable, "-m", "distdd_nas.cli", "run", str(SMOKE), *FAST, *where],
        capture_output=True,  # stdout and stderr are pipes: not a terminal
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
        check=False,
    )
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run, then the same run again (its output and time)."""
    root = tmp_path_factory.mktemp("ux")
    out, cache = root / "run", root / "cache"
    first, first_s = _run(out, cache)
    assert first.returncode == 0, first.stderr
    summary = json.loads((out / "report" / "summary.json").read_text())
    second, second_s = _run(out, cache)
    assert second.returncode == 0, second.stderr
    return {
        "out": out,
        "first": first,
        "second": second,
        "summary": summary,
        "times": (first_s, second_s),
    }


def test_non_tty_output_has_one_line_per_stage_and_no_noise(twice: dict[str, Any]) -> None:
    err = twice["first"].stderr
    for stage in STAGES:
        assert len(re.findall(rf"^■ {stage} done in [0-9.]+ s", err, flags=re.M)) == 1, err
    for task, unit in (("distil", "iterations"), ("evaluate", "networks"), ("search", "trials")):
        assert re.search(rf"^✓ {task}: \d+ {unit} in ", err, flags=re.M), err
    assert re.search(r"^✓ validate: 4 candidates in ", err, flags=re.M)  # 2 top, 1 control, ref
    assert re.search(r"^stage times: distill .*; total ", err, flags=re.M)
    assert "\r" not in err and "Traceback" not in err
    assert "A new study created" not in err  # Optuna's INFO lines go through our handler
    assert "ExperimentalWarning" not in err


def test_second_run_retrains_nothing(twice: dict[str, Any]) -> None:
    err = twice["second"].stderr
    assert re.search(r"^■ distill done in .*\(from cache\), evaluation from cache$", err, re.M)
    assert re.search(r"^■ validate done in .*\(from cache\)$", err, re.M), err
    assert "✓ evaluate" not in err and "✓ distil:" not in err and "✓ validate" not in err
    assert "✓ search: 6 trials in 0.0 s" in err  # the finished study, resumed: no new trial
    first, second = twice["times"]
    assert second < first


def test_report_answers_first_with_params_and_the_reference(twice: dict[str, Any]) -> None:
    out, summary = twice["out"], twice["summary"]
    validation = pd.read_csv(out / "validate" / "validation.csv")
    best = validation.sort_values(
        ["fedavg_accuracy", "proxy_rank"], ascending=[False, True], kind="stable"
    ).iloc[0]
    reference = validation[validation["reference"]].iloc[0]
    assert -1.0 <= summary["kendall_tau"] <= 1.0  # a fedavg.* search validates to a finite τ
    assert summary["best_candidate_id"] == best["candidate_id"]
    assert summary["best_fedavg_accuracy"] == pytest.approx(best["fedavg_accuracy"])
    assert summary["reference_fedavg_accuracy"] == pytest.approx(reference["fedavg_accuracy"])
    assert summary["best_minus_reference"] == pytest.approx(
        best["fedavg_accuracy"] - reference["fedavg_accuracy"]
    )
    for name in ("fedavg.lr", "fedavg.local_epochs", "fedavg.batch_size"):
        assert summary["best_params"][name] == pytest.approx(best[f"params_{name}"])
    report = (out / "report" / "report.md").read_text()
    answer = report.split("## ")[1]  # the first section
    assert answer.startswith("Answer")
    assert f"**Use candidate `{best['candidate_id']}`**" in answer
    assert f"`fedavg.lr` = {best['params_fedavg.lr']:.4g}" in answer
    assert f"`fedavg.local_epochs` = {best['params_fedavg.local_epochs']}" in answer
    assert f"`fedavg.batch_size` = {best['params_fedavg.batch_size']}" in answer
    assert f"**{100 * best['fedavg_accuracy']:.2f} %**" in answer
    assert f"{100 * reference['fedavg_accuracy']:.2f} %" in answer
    assert "How far to trust the proxy: Kendall τ" in answer


def test_summary_is_strict_json(twice: dict[str, Any]) -> None:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    for path in twice["out"].rglob("*.json"):
        json.loads(path.read_text(), parse_constant=refuse)


def _wsgi_get(app: Any, path: str) -> Any:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, *exc: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


def test_optuna_tools_see_the_real_fedavg_accuracy(twice: dict[str, Any]) -> None:
    from optuna.visualization.matplotlib import plot_optimization_history
    from optuna_dashboard import wsgi

    out = twice["out"]
    search = json.loads((out / "search" / "summary.json").read_text())
    storage = search["storage"]
    validation = pd.read_csv(out / "validate" / "validation.csv")
    trials = pd.read_csv(out / "search" / "trials.csv")
    companion = optuna.load_study(study_name=search["study_name"] + "-validation", storage=storage)
    assert companion.metric_names == ["fedavg_accuracy"]
    by_id = {t.user_attrs["candidate_id"]: t for t in companion.trials}
    assert set(by_id) == set(validation["candidate_id"])
    for _, row in validation.iterrows():
        trial = by_id[row["candidate_id"]]
        assert trial.value == pytest.approx(row["fedavg_accuracy"])
        assert trial.params["fedavg.lr"] == pytest.approx(row["params_fedavg.lr"])
        assert trial.user_attrs["number"] == row["number"]
        assert trial.user_attrs["bytes_up"] == row["bytes_up"]
    searched = optuna.load_study(study_name=search["study_name"], storage=storage)
    assert searched.metric_names == ["proxy_score"]
    assert searched.user_attrs["validation_study"] == companion.study_name
    assert {t.user_attrs["candidate_id"] for t in searched.trials} == set(trials["candidate_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = plot_optimization_history(companion, target_name=companion.metric_names[0])
    plotted = ax.collections[0].get_offsets()[:, 1]  # Optuna's own plot shows FedAvg accuracy
    assert sorted(plotted) == pytest.approx(sorted(validation["fedavg_accuracy"]))
    app = wsgi(storage)
    studies = _wsgi_get(app, "/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == companion.study_name)
    detail = _wsgi_get(app, f"/api/studies/{study_id}")
    assert detail["objective_names"] == ["fedavg_accuracy"]  # the dashboard labels its axes
    values = sorted(t["values"][0] for t in detail["trials"])
    assert values == pytest.approx(sorted(validation["fedavg_accuracy"]))
