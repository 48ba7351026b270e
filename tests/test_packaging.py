"""Studies and search spaces are package data: found by name from any directory, in the
repository (through its links) and in a wheel installed, not editable, into a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from distdd_nas.cli import main
from distdd_nas.config import load_config
from distdd_nas.resources import SPACES, STUDIES, shipped_dir, shipped_file, shipped_names
from distdd_nas.study import load_space
from tests.conftest import REPO, SMOKE

PACKAGE = REPO / "distdd_nas"


def test_the_repository_paths_link_to_the_package_data() -> None:
    for kind in (STUDIES, SPACES):
        assert (REPO / kind).is_symlink()
        assert (REPO / kind).resolve() == shipped_dir(kind).resolve() == PACKAGE / kind
    assert {"smoke", "quickstart", "fmnist_iid"} <= set(shipped_names(STUDIES))
    assert {"smoke", "convnet_cpu", "convnet720"} <= set(shipped_names(SPACES))
    assert (PACKAGE / "py.typed").is_file()


@pytest.mark.parametrize("name", ["smoke", "smoke.toml", "studies/smoke.toml", "./studies/smoke"])
def test_a_shipped_study_is_named_by_stem_file_or_repository_path(name: str) -> None:
    assert shipped_file(STUDIES, name) == PACKAGE / "studies" / "smoke.toml"


@pytest.mark.parametrize("name", ["nope", "other/smoke.toml", "/tmp/smoke.toml", "smoke.json"])
def test_other_names_are_no_shipped_study(name: str) -> None:
    assert shipped_file(STUDIES, name) is None


def test_names_resolve_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--threads", "1", "partition", "studies/smoke.toml"]) == 0
    assert (tmp_path / "runs" / "smoke" / "partition" / "summary.json").is_file()  # cwd-relative
    assert load_space("smoke").size == load_space(str(REPO / "search_spaces/smoke.toml")).size
    # a study of one's own may extend a shipped one by name
    (tmp_path / "mine.toml").write_text('extends = "smoke.toml"\n[fedavg]\nrounds = 3\n')
    mine = load_config(tmp_path / "mine.toml")
    assert mine.fedavg.rounds == 3 and mine.study.name == "mine"
    assert mine.distill == load_config(SMOKE).distill
    capsys.readouterr()
    assert main(["partition", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distdd-nas: error: study file 'nope' not found") and "\n" not in err
    assert err.endswith("shipped study: " + ", ".join(shipped_names(STUDIES)))


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _build_wheel(work: Path) -> Path:
    """A wheel built from a copy of what the package is made of (pyproject.toml, README.md,
    distdd_nas/), so nothing at the repository's top level can stand in for package data."""
    source = work / "source"
    shutil.copytree(PACKAGE, source / "distdd_nas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, str(source), "-w", str(work / "dist")], check=True, env=_offline_env())
    (wheel,) = (work / "dist").glob("distdd_nas-*.whl")
    return wheel


def _fresh_venv(work: Path) -> Path:
    """A venv of its own whose dependencies come from this one's site-packages (a .pth path
    line: no network; the editable install's finder is not loaded, as only the new venv's own
    .pth files run)."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.timeout(300)
def test_a_wheel_installed_elsewhere_runs_shipped_studies_and_spaces(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "distdd_nas/py.typed",
        "distdd_nas/studies/smoke.toml",
        "distdd_nas/studies/quickstart.toml",
        "distdd_nas/search_spaces/smoke.toml",
    } <= names
    venv = _fresh_venv(tmp_path)
    install = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps"]
    # --ignore-installed: never touch the editable install this venv can see
    subprocess.run([*install, "--ignore-installed", str(wheel)], check=True, env=_offline_env())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _offline_env(OMP_NUM_THREADS="1")
    cli = [str(venv / "bin/distdd-nas"), "--threads", "1", "partition", "studies/smoke.toml"]
    done = subprocess.run(cli, cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "runs/smoke/partition/summary.json").is_file()
    code = (
        "import distdd_nas as dd\n"
        "study = dd.load_study('smoke', {'search.space': 'smoke'})\n"
        "print(dd.__file__)\n"
        "print(study.study.space.name, int(study.study.space.size))\n"
    )
    shown = subprocess.run(
        [str(venv / "bin/python"), "-c", code],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert Path(shown[0]).is_relative_to(venv)  # the wheel's copy, not the repository's
    assert shown[1] == "smoke 48"
