"""search → validate → report through the CLI on the smoke study, and resuming a killed search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest

from distdd_nas.cli import main
from tests.conftest import SMOKE, patched_cli

FAST = [
    "--set",
    "distill.iterations=2",
    "--set",
    "distill.eval.epochs=10",
    "--set",
    "distill.eval.num_models=1",
    "--set",
    "search.epochs=5",
    "--set",
    "fedavg.rounds=2",
    "--set",
    "fedavg.local_epochs=1",
]


def test_run_smoke_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    code = main(
        [
            "run",
            str(SMOKE),
            "--out",
            str(out),
            "--cache",
            str(cache),
            *FAST,
            "--set",
            "search.n_trials=5",
            "--set",
            "validate.top_k=2",
            "--set",
            "validate.n_random=2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "report" / "summary.json").read_text())
    for key in (
        "kendall_tau",
        "spearman_rho",
        "top1_regret",
        "n_trials",
        "n_validated",
        "bytes_distdd_total",
        "bytes_fedavg_nas_total",
        "comm_ratio",
        "break_even_candidates",
    ):
        assert key in summary, key
    assert summary["n_trials"] == 5 and summary["n_validated"] == 4
    trials = pd.read_csv(out / "report" / "trials.csv")
    validation = pd.read_csv(out / "report" / "validation.csv")
    assert trials.loc[0, "reference"]  # the reference architecture is trial 0
    assert set(validation["candidate_id"]) <= set(trials["candidate_id"])
    assert validation["selected_as"].tolist() == ["top", "top", "control", "control"]
    # Costs are measured: validation bytes equal the FedAvg ledgers.
    ledger = pd.read_csv(out / "validate" / "ledger.csv")
    assert ledger["bytes"].sum() == (validation["bytes_up"] + validation["bytes_down"]).sum()
    for name in (
        "report.md",
        "proxy_vs_fedavg.png",
        "communication.png",
        "history.png",
        "grid.png",
        "manifest.json",
    ):
        assert (out / "report" / name).is_file(), name
    text = (out / "report" / "report.md").read_text()
    assert "Kendall" in text and "Break-even" in text
    validated_at = (out / "validate" / "manifest.json").stat().st_mtime_ns
    # A second run reuses every cached stage and continues the same study.
    assert (
        main(
            [
                "run",
                str(SMOKE),
                "--out",
                str(out),
                "--cache",
                str(cache),
                *FAST,
                "--set",
                "search.n_trials=5",
                "--set",
                "validate.top_k=2",
                "--set",
                "validate.n_random=2",
            ]
        )
        == 0
    )
    again = pd.read_csv(out / "report" / "trials.csv")
    assert (out / "validate" / "manifest.json").stat().st_mtime_ns == validated_at
    assert again["number"].tolist() == trials["number"].tolist()
    assert json.loads((out / "distill" / "summary.json").read_text())["cache_hit"]
    # inspect summarises the run
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "search" in shown and "complete" in shown and "kendall_tau" in shown


def test_validate_before_search_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(SMOKE), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run 'distdd-nas search'" in err


def test_inspect_bad_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def _completed(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        names = optuna.get_all_study_names(storage)
    except Exception:
        return []
    if not names:
        return []
    study = optuna.load_study(study_name=names[0], storage=storage)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


KILL_AT_THIRD_TRIAL = """
import os, signal, sys
from optuna.trial import TrialState
from distdd_nas.search.backends.optuna import OptunaBackend
run_trial = OptunaBackend._run_trial
def killing_run_trial(self, fn, trial):
    if self._count((TrialState.COMPLETE,)) >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_trial(self, fn, trial)
OptunaBackend._run_trial = killing_run_trial
"""


def test_killed_search_resumes_without_losing_trials(tmp_path: Path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [
        "search",
        str(SMOKE),
        "--out",
        str(out),
        "--cache",
        str(cache),
        *FAST,
        "--set",
        "search.n_trials=6",
        "--set",
        "search.epochs=20",
    ]
    # Distil first so the killed process spends its time in trials.
    assert main(["distill", str(SMOKE), "--out", str(out), "--cache", str(cache), *FAST]) == 0
    storage = f"sqlite:///{(out / 'search' / 'optuna.db').resolve()}"
    # The process SIGKILLs itself as it starts the third trial: deterministic, unlike polling the
    # storage from here (a fast machine finishes all six trials between two polls). The third
    # trial is left RUNNING in the storage, as after a real kill -9.
    proc = subprocess.run(
        [*patched_cli(KILL_AT_THIRD_TRIAL), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL
    before = {t.number: (t.value, t.params) for t in _completed(storage)}
    assert len(before) == 2, "the search must be killed mid-way"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert [t.state for t in study.trials][-1] == optuna.trial.TrialState.RUNNING
    assert main(args) == 0
    after = {t.number: (t.value, t.params) for t in _completed(storage)}
    assert len(after) == 6
    for number, record in before.items():
        assert after[number] == record, "a completed trial changed or was lost"
    trials = pd.read_csv(out / "search" / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 6
    # the resumed search evaluates the candidates an uninterrupted one does, with equal scores
    whole = tmp_path / "whole"
    assert main([*args[:2], "--out", str(whole), *args[4:]]) == 0
    storage = f"sqlite:///{(whole / 'search' / 'optuna.db').resolve()}"
    uninterrupted = sorted((t.value, sorted(t.params.items())) for t in _completed(storage))
    assert sorted((v, sorted(p.items())) for v, p in after.values()) == uninterrupted


@pytest.mark.nni
@pytest.mark.timeout(400)
def test_run_smoke_through_nni(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same smoke pipeline with the NNI backend: trials land in the same table."""
    pytest.importorskip("nni")
    out, cache = tmp_path / "run", tmp_path / "cache"
    code = main(
        [
            "run",
            str(SMOKE),
            "--out",
            str(out),
            "--cache",
            str(cache),
            *FAST,
            "--set",
            "search.backend=nni",
            "--set",
            "search.sampler=random",
            "--set",
            "search.n_trials=3",
            "--set",
            "validate.top_k=2",
            "--set",
            "validate.n_random=0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    trials = pd.read_csv(out / "report" / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 3
    assert set(trials["backend"]) == {"nni"}
    assert (out / "search" / "nni").is_dir()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n_trials"] == 3 and summary["n_validated"] == 2


#: ``run``, recording every candidate validation trains (in TRAINED) and SIGKILLing itself as
#: it starts the second one.
KILL_AT_SECOND_VALIDATION = """
import os, signal, sys
from distdd_nas.stages import validate
run_fedavg, trained = validate.run_fedavg, []
def recording_run_fedavg(engine, *, arch, **kwargs):
    trained.append(arch.short_name())
    if len(trained) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.environ["TRAINED"], "a") as fh:
        fh.write(arch.short_name() + "\\n")
    return run_fedavg(engine, arch=arch, **kwargs)
validate.run_fedavg = recording_run_fedavg
"""


def test_run_killed_during_validation_trains_no_candidate_twice(tmp_path: Path) -> None:
    out, cache, log = tmp_path / "run", tmp_path / "cache", tmp_path / "trained.txt"
    args = [
        "run",
        str(SMOKE),
        "--out",
        str(out),
        "--cache",
        str(cache),
        *FAST,
        "--set",
        "search.n_trials=4",
        "--set",
        "validate.top_k=2",
        "--set",
        "validate.n_random=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINED": str(log)}
    proc = subprocess.run(
        [*patched_cli(KILL_AT_SECOND_VALIDATION), *args], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    first = log.read_text().split()
    assert len(first) == 1  # one candidate finished before the kill (its start was logged)
    # the rerun, recorded the same way but never killed
    rerun = KILL_AT_SECOND_VALIDATION.replace("len(trained) == 2", "False")
    proc = subprocess.run([*patched_cli(rerun), *args], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    second = log.read_text().split()[1:]
    assert len(second) == 2 and first[0] not in second, "the finished candidate is not retrained"
    validation = pd.read_csv(out / "validate" / "validation.csv")
    assert len(validation) == 3 and validation["candidate_id"].is_unique
    assert not (out / ".validate-progress").exists()
