"""A shared ``--cache``: concurrent writers never corrupt an entry; a diverged set is never cached.

The end-to-end case starts two real ``distill`` processes on one cache at once (the issue's
reproduction: one used to crash, or both "succeeded" with an entry lacking synthetic.npz).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from distdd_nas import cli
from distdd_nas.artifacts import is_complete, load_json, locked, stage
from distdd_nas.distill import DistilledSet, DistillResult
from distdd_nas.federation import Ledger
from tests.conftest import REPO, SMOKE

TINY = [
    "--set",
    "distill.iterations=2",
    "--set",
    "distill.eval.epochs=2",
    "--set",
    "distill.eval.num_models=1",
]


def test_two_distill_processes_on_one_cache(tmp_path: Path) -> None:
    """Both finish; one entry, complete; the same bytes for both; one of them reused it."""
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "distdd_nas.cli", "--threads", "1", "distill", str(SMOKE)),
                *(*TINY, "--cache", str(cache), "--out", str(tmp_path / f"out{i}")),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    entries = sorted(p.name for p in (cache / "distilled").iterdir())
    assert len(entries) == 3, entries  # the set, its evaluation, its lock: no .partial/.old
    assert entries[1].startswith(entries[0] + ".eval-") and entries[2] == entries[0] + ".lock"
    entry = cache / "distilled" / entries[0]
    assert is_complete(entry) and (entry / "synthetic.npz").is_file()
    summaries = [load_json(tmp_path / f"out{i}" / "distill" / "summary.json") for i in range(2)]
    assert {s["artifact"] for s in summaries} == {str(entry)}
    assert sorted(s["cache_hit"] for s in summaries) == [False, True]
    manifest = load_json(entry / "manifest.json")
    assert set(manifest["files"]) == {p.name for p in entry.iterdir()} - {"manifest.json"}


def _nan_distillation(*_: object, **__: object) -> tuple[DistillResult, Ledger]:
    images = torch.zeros(10, 1, 8, 8)
    images[3, 0, 2, 2] = float("nan")
    synthetic = DistilledSet(images=images, labels=torch.arange(10), num_classes=10)
    return DistillResult(synthetic, pd.DataFrame(), np.ones((4, 10)), 0.0), Ledger()


def test_a_diverged_distillation_is_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("distdd_nas.stages.distill.on_configured_engine", _nan_distillation)
    cache = tmp_path / "cache"
    argv = ["distill", str(SMOKE), "--out", str(tmp_path / "out"), "--cache", str(cache)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "diverged" in err and "distill.lr_img" in err
    assert [p.suffix for p in (cache / "distilled").iterdir()] == [".lock"]  # no entry
    assert not (tmp_path / "out" / "config.json").exists()


def test_stage_swap_survives_a_concurrent_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer swaps its directory in just before ours: ours is retried and wins whole."""
    path = tmp_path / "entry"
    real_replace = os.replace
    raced: list[bool] = []

    def racing_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == path and ".partial-" in Path(src).name and not raced:
            raced.append(True)  # the other writer lands first: path is a full directory now
            (tmp_path / "theirs").mkdir()
            (tmp_path / "theirs" / "manifest.json").write_text('{"fingerprint": "b"}')
            real_replace(tmp_path / "theirs", path)
            raise OSError(errno.ENOTEMPTY, "Directory not empty")
        real_replace(src, dst)

    monkeypatch.setattr("distdd_nas.artifacts.os.replace", racing_replace)
    with stage(path, fingerprint="a") as w:
        w.json("summary.json", {"writer": "a"})
    assert raced and is_complete(path, "a")
    assert json.loads((path / "summary.json").read_text()) == {"writer": "a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from distdd_nas.artifacts import stage
    name, path = sys.argv[1], Path(sys.argv[2])
    for k in range(15):
        with stage(path, fingerprint=name) as w:
            w.json("summary.json", {"writer": name, "k": k})
            w.npz("data.npz", {"v": np.full(20000, k)})
    """
)


def test_processes_writing_one_stage_leave_one_whole_directory(tmp_path: Path) -> None:
    """Two processes replace the same stage directory 15 times each, at once: every swap
    succeeds and the survivor is one writer's complete directory, files matching."""
    path = tmp_path / "entry"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name, str(path)], cwd=REPO)
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    summary = load_json(path / "summary.json")
    assert is_complete(path, summary["writer"]) and summary["k"] == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_lock_waits_for_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    held, release, waited = threading.Event(), threading.Event(), []

    def holder() -> None:
        with locked(lock):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)

    def on_wait() -> None:
        waited.append(True)
        release.set()

    with locked(lock, on_wait=on_wait):
        assert waited == [True]
    thread.join(10)


def test_the_thread_count_is_part_of_the_distilled_key() -> None:
    """Float rounding differs with torch's thread count, so a set made with 2 threads is not a
    cache hit for a run with 1 (same seed, same bytes holds per key)."""
    from distdd_nas.stages.common import distilled_fingerprint
    from tests.conftest import smoke

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = distilled_fingerprint(smoke())
        torch.set_num_threads(2)
        two = distilled_fingerprint(smoke())
    finally:
        torch.set_num_threads(before)
    assert one != two
