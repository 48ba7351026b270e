"""Hostile artifacts: a cache entry or run directory tampered with after it was written.

Each case starts from a real smoke run (distilled set in the cache, a finished search),
damages one file the way a disk, a crash or a person would, and runs the command that reads
it: exit 2, one line naming the file and the fix, no traceback, and nothing changed on disk.
Checksums come from the manifests (SHA-256 per file, verified on load).
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from distdd_nas import cli
from distdd_nas.artifacts import MANIFEST, file_digest
from tests.conftest import SMOKE
from tests.test_checks import snapshot

FAST = [
    "--set", "distill.iterations=2", "--set", "distill.eval.epochs=3",
    "--set", "distill.eval.num_models=1", "--set", "search.epochs=3",
    "--set", "search.n_trials=3", "--set", "fedavg.rounds=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    argv = ["--out", str(root / "run"), "--cache", str(root / "cache"), *FAST]
    assert cli.main(["search", str(SMOKE), *argv]) == 0
    return root


def entry(root: Path) -> Path:
    (path,) = [p for p in (root / "cache" / "distilled").iterdir() if p.is_dir()]
    return path


def reseal(directory: Path, name: str) -> None:
    """Record the damaged file's new SHA-256 in the manifest (a tamperer who covers tracks,
    so what is tested is the loader's own validation, not the checksum)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["sha256"][name] = file_digest(directory / name)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def rewrite_npz(root: Path, **arrays: np.ndarray) -> None:
    path = entry(root) / "synthetic.npz"
    with np.load(path) as data:
        content = {k: data[k] for k in data.files}
    content.update(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **content)  # type: ignore[arg-type]
    path.write_bytes(buffer.getvalue())
    reseal(entry(root), "synthetic.npz")


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate_npz(root: Path) -> None:
    path = entry(root) / "synthetic.npz"
    path.write_bytes(path.read_bytes()[:200])
    reseal(entry(root), "synthetic.npz")


def pickled_npz(root: Path) -> None:
    path = entry(root) / "synthetic.npz"
    buffer = io.BytesIO()
    np.savez(buffer, images=np.array([{"evil": 1}], dtype=object))
    path.write_bytes(buffer.getvalue())
    reseal(entry(root), "synthetic.npz")


def wrong_sha(root: Path) -> None:
    manifest = json.loads((entry(root) / MANIFEST).read_text())
    manifest["sha256"]["history.csv"] = "0" * 64
    (entry(root) / MANIFEST).write_text(json.dumps(manifest))


def truncate_trials(root: Path) -> None:
    path = root / "run" / "search" / "trials.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")


#: (what is damaged, how, the command that reads it, words the one line must hold)
CASES: list[tuple[str, Callable[[Path], None], list[str], list[str]]] = [
    ("synthetic bit flip", lambda r: flip_byte(entry(r) / "synthetic.npz"), ["distill"],
     ["synthetic.npz", "changed after it was written", "re-run"]),
    ("synthetic truncated", truncate_npz, ["distill"], ["synthetic.npz", "corrupt"]),
    ("synthetic pickled", pickled_npz, ["distill"], ["synthetic.npz", "corrupt"]),
    ("synthetic 3-D images",
     lambda r: rewrite_npz(r, images=np.zeros((20, 8, 8), np.float32)), ["distill"],
     ["float32 N×C×H×W"]),
    ("synthetic float64 labels",
     lambda r: rewrite_npz(r, labels=np.zeros(50, np.float64)), ["distill"], ["int64"]),
    ("synthetic labels out of range",
     lambda r: rewrite_npz(r, labels=np.full(50, 99, np.int64)), ["distill"],
     ["fall outside"]),
    ("synthetic deleted", lambda r: (entry(r) / "synthetic.npz").unlink(), ["distill"],
     ["synthetic.npz", "missing"]),
    ("manifest checksum tampered", wrong_sha, ["distill"], ["history.csv", "changed"]),
    ("trials truncated", truncate_trials, ["validate"], ["trials.csv", "changed"]),
    ("trials emptied", lambda r: (r / "run" / "search" / "trials.csv").write_text(""),
     ["validate"], ["trials.csv", "changed"]),
    ("trials deleted", lambda r: (r / "run" / "search" / "trials.csv").unlink(), ["validate"],
     ["trials.csv", "missing"]),
    ("search made under other settings", lambda r: None,
     ["validate", "--set", "search.epochs=4"], ["other settings", "re-run 'distdd-nas search'"]),
    ("report before validation", lambda r: None,
     ["report"], ["not complete", "validate"]),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "argv", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_damaged_artifact_is_one_line_and_changes_nothing(
    damage: Callable[[Path], None],
    argv: list[str],
    words: list[str],
    template: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(template, root)
    damage(root)
    before = snapshot(root)
    args = [argv[0], str(SMOKE), *FAST, *argv[1:]]
    code = cli.main([*args, "--out", str(root / "run"), "--cache", str(root / "cache")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("distdd-nas: error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    assert snapshot(root) == before, "a failed command changed what was on disk"
