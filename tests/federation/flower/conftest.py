"""Fixtures of the Flower tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's Message constructor needs the process's task identity (set by the runtimes)."""
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)
