"""Stage directories: manifest last, atomic replacement, corrupt artifacts detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distdd_nas.artifacts import is_complete, load_json, load_npz, read_manifest, stage
from distdd_nas.errors import ArtifactError


def test_stage_writes_manifest_last_and_lists_files(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with stage(path, fingerprint="abc", meta={"stage": "x"}) as w:
        w.json("summary.json", {"a": np.float32(1.5)})
        w.csv("t.csv", pd.DataFrame({"x": [1, 2]}))
        w.npz("a.npz", {"v": np.arange(3)})
        assert not is_complete(path) and not path.exists()
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["fingerprint"] == "abc" and manifest["stage"] == "x"
    assert manifest["files"] == ["a.npz", "summary.json", "t.csv"]
    assert is_complete(path, "abc") and not is_complete(path, "other")
    np.testing.assert_array_equal(load_npz(path / "a.npz")["v"], np.arange(3))
    assert load_json(path / "summary.json") == {"a": 1.5}


def test_failed_stage_keeps_previous_result(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with stage(path, fingerprint="v1") as w:
        w.json("summary.json", {"v": 1})
    with pytest.raises(RuntimeError), stage(path, fingerprint="v2") as w:
        w.json("summary.json", {"v": 2})
        raise RuntimeError("crash mid-stage")
    assert load_json(path / "summary.json") == {"v": 1}
    assert is_complete(path, "v1")
    assert list(tmp_path.iterdir()) == [path]  # no partial or old directory left behind


def test_corrupt_and_missing_artifacts_raise_artifact_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ArtifactError, match=r"bad.npz is corrupt.*delete its stage directory"):
        load_npz(bad)
    with pytest.raises(ArtifactError, match=r"missing.npz is missing; re-run"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"bad.json is corrupt"):
        load_json(tmp_path / "bad.json")
