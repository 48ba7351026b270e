"""Shared fixtures: small real data (scikit-learn digits) and study configs built in memory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from distdd_nas.config import StudyConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "studies" / "smoke.toml"


# Tests train tiny models: one intra-op thread avoids oversubscribing small CPUs (2 threads
# on tiny convolutions were measured up to 20x slower on a busy 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _flower_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Flower must never phone home or install packages from tests."""
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


@pytest.fixture
def smoke_config() -> StudyConfig:
    """The smoke study as shipped."""
    return load_config(SMOKE)


def patched_cli(patch: str) -> list[str]:
    """The argv prefix of a fresh interpreter that runs ``patch`` (test code that wraps one
    function, e.g. to SIGKILL the process at a chosen point), then the CLI with the rest of
    the arguments."""
    cli = "import sys\nfrom distdd_nas.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", patch + "\n" + cli]


def smoke(*overrides: str) -> StudyConfig:
    """The smoke study with ``--set`` style overrides."""
    return load_config(SMOKE, overrides)
