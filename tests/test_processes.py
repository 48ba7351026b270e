"""distdd_nas.processes on real processes: ports, process trees, stopping by PID, watchers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distdd_nas.processes import (
    ChildWatcher,
    ProcessGroup,
    create_time,
    descendants,
    free_port,
    free_ports,
    kill_tree,
    pid_alive,
    still_same,
    stop_pids,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses sh, sleep and /proc"),
]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def read_pids(path: Path, n: int) -> list[int]:
    """The ``n`` PIDs a shell script wrote to ``path`` (one a line), once all are there."""
    assert wait_until(lambda: path.is_file() and len(path.read_text().split()) >= n)
    return [int(p) for p in path.read_text().split()[:n]]


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """PIDs a test started; whatever still runs at the end is SIGKILLed (by PID)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def popen(argv: list[str], spawned: list[int]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    spawned.append(proc.pid)
    return proc


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in ports]
    try:
        for sock, port in zip(socks, ports, strict=True):
            sock.bind(("127.0.0.1", port))
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------


def test_pid_alive_and_create_time_follow_a_process(spawned: list[int]) -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)
    proc = popen(["sleep", "60"], spawned)
    started = create_time(proc.pid)
    assert pid_alive(proc.pid) and started is not None
    assert create_time(proc.pid) == started
    assert still_same({proc.pid: started}) == [proc.pid]
    assert still_same({proc.pid: started + 1.0, 999_999_999: started}) == []  # reused / gone
    proc.kill()
    assert wait_until(lambda: not pid_alive(proc.pid))  # a zombie counts as gone
    proc.wait()
    assert not pid_alive(proc.pid)
    assert create_time(proc.pid) is None
    assert still_same({proc.pid: started}) == []


def test_descendants_finds_children_and_grandchildren(tmp_path: Path, spawned: list[int]) -> None:
    pidfile = tmp_path / "pids"
    script = (
        f"sleep 60 & echo $! >> {pidfile}; sh -c 'sleep 60 & echo $! >> {pidfile}; wait' & wait"
    )
    root = popen(["sh", "-c", script], spawned)
    child, grandchild = read_pids(pidfile, 2)
    spawned += [child, grandchild]
    assert wait_until(lambda: {child, grandchild} <= set(descendants(root.pid)))
    assert root.pid not in descendants(root.pid)
    assert set(descendants(os.getpid())) >= {root.pid, child, grandchild}
    assert descendants(999_999_999) == []
    assert kill_tree(root.pid, grace=2.0) == []
    root.wait()


def test_proc_fallback_agrees_with_psutil(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spawned: list[int]
) -> None:
    """Without psutil the same answers come from /proc."""
    pytest.importorskip("psutil")
    pidfile = tmp_path / "pids"
    root = popen(["sh", "-c", f"sleep 60 & echo $! >> {pidfile}; wait"], spawned)
    (child,) = read_pids(pidfile, 1)
    spawned.append(child)
    with_psutil = sorted(descendants(root.pid))
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    assert sorted(descendants(root.pid)) == with_psutil == [child]
    assert pid_alive(child) and pid_alive(os.getpid())
    ticks = create_time(child)
    assert ticks is not None and create_time(child) == ticks
    assert stop_pids([root.pid, child], grace=2.0) == []
    root.wait()
    assert not pid_alive(child) and not pid_alive(root.pid)
    assert create_time(root.pid) is None


# --------------------------------------------------------------------------------------------
# Stopping
# --------------------------------------------------------------------------------------------


def test_stop_pids_terminates_and_never_signals_itself(spawned: list[int]) -> None:
    procs = [popen(["sleep", "60"], spawned) for _ in range(3)]
    pids = [p.pid for p in procs]
    assert stop_pids([*pids, pids[0], os.getpid(), 999_999_999], grace=5.0) == []
    for proc in procs:
        assert proc.wait(timeout=5) == -signal.SIGTERM
    assert pid_alive(os.getpid())
    assert stop_pids(pids) == []  # already gone: nothing to do


def test_stop_pids_kills_what_ignores_sigterm(spawned: list[int]) -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    spawned.append(proc.pid)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    start = time.monotonic()
    assert stop_pids([proc.pid], grace=0.5) == []
    assert time.monotonic() - start >= 0.5
    assert proc.wait(timeout=5) == -signal.SIGKILL
    proc.stdout.close()


def test_kill_tree_stops_the_whole_tree(tmp_path: Path, spawned: list[int]) -> None:
    pidfile = tmp_path / "pids"
    script = (
        f"sleep 60 & echo $! >> {pidfile}; "
        f"sh -c 'sleep 60 & echo $! >> {pidfile}; sleep 60' & echo $! >> {pidfile}; wait"
    )
    root = popen(["sh", "-c", script], spawned)
    tree = read_pids(pidfile, 3)
    spawned += tree
    assert all(pid_alive(p) for p in tree)
    assert kill_tree(root.pid, grace=5.0) == []
    root.wait(timeout=5)
    assert not any(pid_alive(p) for p in [root.pid, *tree])
    assert kill_tree(root.pid) == []  # gone already


# --------------------------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------------------------


def test_child_watcher_stops_orphans_and_spares_older_processes(
    tmp_path: Path, spawned: list[int]
) -> None:
    older = popen(["sleep", "60"], spawned)
    pidfile = tmp_path / "pids"
    with ChildWatcher(interval=0.02) as watcher:
        # The shell starts a sleep, then exits: the sleep is orphaned (no longer our
        # descendant) but was seen while it was.
        parent = popen(["sh", "-c", f"sleep 60 & echo $! >> {pidfile}; sleep 1"], spawned)
        (orphan,) = read_pids(pidfile, 1)
        spawned.append(orphan)
        parent.wait(timeout=10)
    assert orphan not in descendants(os.getpid())
    assert pid_alive(orphan)
    assert orphan in watcher.pids and parent.pid in watcher.pids
    assert older.pid not in watcher.pids
    assert watcher.stop_all(grace=5.0) == []
    assert not pid_alive(orphan)
    assert pid_alive(older.pid)
    older.kill()
    older.wait()


def test_process_group_logs_and_stops_programs_with_their_trees(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path / "logs", dict(os.environ))
    pidfile = tmp_path / "pids"
    try:
        server = group.spawn("server", ["sh", "-c", "echo server up; exec sleep 60"])
        client = group.spawn(
            "client", ["sh", "-c", f"echo client up; sleep 60 & echo $! >> {pidfile}; sleep 1"]
        )
        (orphan,) = read_pids(pidfile, 1)
        assert wait_until(lambda: bool(group.refresh() or orphan in client.seen))
        client.proc.wait(timeout=10)  # the client exits; its sleep lives on, orphaned
        assert pid_alive(orphan) and pid_alive(server.proc.pid)
        assert set(group.all_pids()) >= {server.proc.pid, client.proc.pid, orphan}
    finally:
        survivors = group.stop(grace=5.0)
    assert survivors == []
    assert not pid_alive(orphan) and not pid_alive(server.proc.pid)
    assert server.proc.returncode is not None
    assert (tmp_path / "logs" / "server.log").read_text() == "server up\n"
    assert (tmp_path / "logs" / "client.log").read_text() == "client up\n"
    assert server.logfile.closed and client.logfile.closed


def test_process_group_spawn_failure_closes_its_log(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path / "logs", dict(os.environ))
    with pytest.raises(FileNotFoundError):
        group.spawn("missing", [str(tmp_path / "no-such-program")])
    assert group.items == [] and group.stop() == []
