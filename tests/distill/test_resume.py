"""A distillation killed with SIGKILL resumes from its last iteration to the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pandas as pd

from distdd_nas.cli import main
from tests.conftest import REPO, SMOKE, patched_cli

ARGS = [
    "--set",
    "distill.iterations=4",
    "--set",
    "distill.eval.epochs=5",
    "--set",
    "distill.eval.num_models=1",
]

#: The CLI, SIGKILLing itself right after the second iteration's state is saved.
KILL_AFTER_SECOND_SAVE = """
import os, signal, sys
from distdd_nas.stages.on_engine import FileCheckpointer
save, saves = FileCheckpointer.save, []
def killing_save(self, state):
    save(self, state)
    saves.append(1)
    if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
FileCheckpointer.save = killing_save
"""


def entry(cache: Path) -> Path:
    (path,) = [p for p in (cache / "distilled").iterdir() if p.is_dir()]
    return path


def test_killed_distillation_resumes_to_identical_bytes(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    argv = ["distill", str(SMOKE), *ARGS]
    assert main([*argv, "--out", str(whole / "run"), "--cache", str(whole / "cache")]) == 0
    proc = subprocess.run(
        [
            *patched_cli(KILL_AFTER_SECOND_SAVE),
            *argv,
            "--out",
            str(killed / "run"),
            "--cache",
            str(killed / "cache"),
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (resume,) = (killed / "cache" / "distilled").glob("*.resume.pt")
    assert main([*argv, "--out", str(killed / "run"), "--cache", str(killed / "cache")]) == 0
    a, b = entry(whole / "cache"), entry(killed / "cache")
    assert a.name == b.name
    assert (a / "synthetic.npz").read_bytes() == (b / "synthetic.npz").read_bytes()
    # the census was not sent again and every step is metered once: the same ledger
    pd.testing.assert_frame_equal(pd.read_csv(a / "comm.csv"), pd.read_csv(b / "comm.csv"))
    history = pd.read_csv(b / "history.csv")
    assert history["iteration"].tolist() == [0, 1, 2, 3]
    assert not resume.exists(), "the checkpoint is removed once the entry is complete"
