"""Several `distdd-nas search` workers on one study: PostgreSQL (RDB) and the journal file.

Each worker is a separate process with its own run directory; they share the distilled set (one
cache) and the Optuna study (one storage). The union of their trials must be exactly the target
number of distinct completed trials.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest

from distdd_nas.cli import main
from distdd_nas.search.backends.optuna_storage import make_storage
from tests.conftest import SMOKE, patched_cli
from tests.servers import postgres_server

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
    "search.sampler=random",
]


#: Each worker, after its first trial, waits until every worker has finished one: without this a
#: worker that starts late on a fast machine can find all trials taken, and the test would race.
BARRIER_AFTER_FIRST_TRIAL = """
import os, sys, time
from pathlib import Path
from distdd_nas.search.backends.optuna import OptunaBackend
barrier, workers = Path(os.environ["BARRIER"]), int(os.environ["WORKERS"])
run_trial = OptunaBackend._run_trial
def run_trial_then_wait(self, fn, trial):
    state = run_trial(self, fn, trial)
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(list(barrier.iterdir())) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return state
OptunaBackend._run_trial = run_trial_then_wait
"""


def run_workers(tmp: Path, storage: str, workers: int, n_trials: int) -> optuna.Study:
    cache = tmp / "cache"
    assert (
        main(["distill", str(SMOKE), "--out", str(tmp / "w0"), "--cache", str(cache), *FAST]) == 0
    )
    barrier = tmp / "barrier"
    barrier.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BARRIER": str(barrier), "WORKERS": str(workers)}
    procs = [
        subprocess.Popen(
            [
                *patched_cli(BARRIER_AFTER_FIRST_TRIAL),
                "search",
                str(SMOKE),
                "--out",
                str(tmp / f"w{i}"),
                "--cache",
                str(cache),
                *FAST,
                "--set",
                f"search.n_trials={n_trials}",
                "--set",
                f'search.storage="{storage}"',
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    try:
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text[-2000:]
    handle = make_storage(storage)  # understands journal:// as well as SQLAlchemy URLs
    names = optuna.get_all_study_names(handle)
    assert len(names) == 1
    return optuna.load_study(study_name=names[0], storage=handle)


def check_union(study: optuna.Study, n_trials: int, workers: int) -> None:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n_trials
    assert len({t.number for t in complete}) == n_trials
    assert len({t.user_attrs.get("worker") for t in complete}) == workers, "each worker ran"


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_three_workers_on_postgresql(tmp_path: Path) -> None:
    with postgres_server() as url:
        study = run_workers(tmp_path, url, workers=3, n_trials=12)
        check_union(study, 12, workers=3)


@pytest.mark.timeout(600)
def test_two_workers_on_journal_file(tmp_path: Path) -> None:
    storage = f"journal://{tmp_path / 'study.log'}"
    study = run_workers(tmp_path, storage, workers=2, n_trials=12)
    check_union(study, 12, workers=2)
