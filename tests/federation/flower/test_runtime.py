"""Both Flower runtimes (simulation on Ray, deployment with SuperLink + SuperNodes) against the
in-process engine: same replies bit for bit, same ledger, every process stopped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from distdd_nas.errors import EngineError
from tests.federation.flower.toy import (
    HERE,
    REPO,
    TOY_DATA,
    TOY_SERVER,
    TOY_TASKS,
    assert_same_replies,
    inprocess_reference,
    ledger_rows,
)

pytestmark = pytest.mark.flower

flwr = pytest.importorskip("flwr")


def flower_processes(out_dir: Path) -> list[int]:
    """PIDs of live processes whose FLWR_HOME lies in ``out_dir`` (i.e. started for this run)."""
    import psutil

    found: list[int] = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            home = proc.environ().get("FLWR_HOME", "")
        except (psutil.Error, OSError):
            continue
        if home.startswith(str(out_dir)):
            found.append(proc.pid)
    return found


def assert_stopped(pids: Iterable[int], out_dir: Path) -> None:
    from distdd_nas.processes import pid_alive

    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"processes still running: {alive}"
    assert not flower_processes(out_dir), "a Flower process of this run is still running"


@pytest.mark.timeout(240)
def test_simulation_matches_inprocess(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from distdd_nas.federation.flower.simulation import run_on_simulation

    out = tmp_path / "sim"
    result = run_on_simulation(
        None,
        server_fn=TOY_SERVER,
        out_dir=out,
        num_clients=3,
        tasks=TOY_TASKS,
        client_data=TOY_DATA,
        num_cpus=2,
        extra={"toy-rounds": 2, "toy-fail": True},
    )
    ref, ref_engine = inprocess_reference(3)
    assert_same_replies(result, ref)
    assert ledger_rows(result.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert result.ledger.total("up", "toy_sum") == ref_engine.ledger.bytes_up
    assert result.ledger.total("down", "toy_sum") == ref_engine.ledger.bytes_down
    # The crashing client is absent; its message was metered down, no reply up.
    assert result.result["failed_round_ids"] == [0, 2]
    assert [(c, d) for _, c, d, _, _ in ledger_rows(result.ledger, "toy_fail")] == [
        (0, "down"),
        (0, "up"),
        (1, "down"),
        (2, "down"),
        (2, "up"),
    ]
    assert result.result["pid"] == os.getpid()  # the ServerApp ran in this process
    assert len(result.engine["rounds"]) == 3 and result.timings["startup"] > 0
    assert_stopped(result.pids, out)


@pytest.mark.slow  # the default suite's deployment run: test_on_engine.py (faults, TLS, auth)
@pytest.mark.timeout(300)
def test_deployment_matches_inprocess(tmp_path: Path) -> None:
    """The toy server on SuperLink + SuperNodes: same replies, same ledger rows as in-process."""
    from distdd_nas.federation.flower.deployment import run_on_deployment

    out = tmp_path / "dep"
    result = run_on_deployment(
        None,
        server_fn=TOY_SERVER,
        out_dir=out,
        num_clients=2,
        tasks=TOY_TASKS,
        client_data=TOY_DATA,
        python_path=[REPO],
        startup_timeout=60,
        run_timeout=240,
        connect_timeout=60,
        extra={"toy-rounds": 2},
    )
    ref, ref_engine = inprocess_reference(2)
    assert_same_replies(result, ref)
    assert ledger_rows(result.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert result.ledger.bytes_up == ref_engine.ledger.bytes_up
    assert result.ledger.bytes_down == ref_engine.ledger.bytes_down
    assert result.result["pid"] != os.getpid()  # the ServerApp ran in flwr-serverapp
    assert len(result.pids) >= 3  # SuperLink + 2 SuperNodes (+ their children)
    assert_stopped(result.pids, out)
    assert (out / "app" / "pyproject.toml").is_file()


@pytest.mark.timeout(240)
def test_deployment_failure_reports_and_stops_everything(tmp_path: Path) -> None:
    from distdd_nas.federation.flower.deployment import run_on_deployment

    out = tmp_path / "fail"
    with pytest.raises(EngineError, match="has no attribute 'no_such_server_fn'"):
        run_on_deployment(
            None,
            server_fn=f"{HERE}:no_such_server_fn",
            out_dir=out,
            num_clients=1,
            tasks=TOY_TASKS,
            client_data=TOY_DATA,
            python_path=[REPO],
            startup_timeout=60,
            run_timeout=120,
            connect_timeout=60,
        )
    assert_stopped([], out)
