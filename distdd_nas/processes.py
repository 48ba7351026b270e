"""Local process handling shared by every runner: free ports, process trees, stop by PID.

Runners of distdd-nas start other programs — Flower's SuperLink and SuperNodes, Ray's workers,
NNI's manager — and must leave nothing behind, also when a run fails. Those programs start
children of their own, and some of those outlive their parent as orphans, so "stop what I
started" means: remember every PID that ever belonged to the run (with its start time, so a
reused PID is never hit) and stop them all by PID, SIGTERM first, SIGKILL after a grace period.

* Ports: :func:`free_port`, :func:`free_ports` (bound and released; a tiny race is accepted).
* Inspection: :func:`descendants`, :func:`pid_alive`, :func:`create_time`, :func:`still_same`.
* Stopping: :func:`stop_pids`, :func:`kill_tree`.
* Bookkeeping: :class:`ChildWatcher` (every descendant of this process while active) and
  :class:`ProcessGroup` (programs started with a log file each, stopped as trees).

``psutil`` is used when installed (it comes with Ray and NNI); without it, Linux ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (bound and released; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct free TCP ports on ``host`` (for a server and its clients)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first); [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (children first found, recursively)."""
    try:
        import psutil
    except ImportError:  # psutil comes with Ray and NNI; /proc fallback on Linux
        return _descendants_from_proc(pid)
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _descendants_from_proc(pid: int) -> list[int]:
    """:func:`descendants` from ``/proc`` (Linux, without psutil)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else []
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs: a zombie (exited, not reaped) counts as gone; a process of
    another user, which we may not signal, counts as running."""
    if pid <= 0:
        return False
    try:
        import psutil
    except ImportError:
        fields = _proc_stat(pid)
        if fields:
            return fields[0] not in ("Z", "X")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def create_time(pid: int) -> float | None:
    """Start time of ``pid`` (guards against PID reuse), or None when it is gone."""
    try:
        import psutil
    except ImportError:  # clock ticks since boot: comparable only to itself
        fields = _proc_stat(pid)
        try:
            return float(fields[19])
        except (IndexError, ValueError):
            return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def still_same(started: Mapping[int, float | None]) -> list[int]:
    """The PIDs of ``started`` (pid → create time) that still run the same process."""
    return [pid for pid, t in started.items() if t is not None and create_time(pid) == t]


def process_name(pid: int) -> str:
    """A short name for log lines: the first two words of the command line, or ``"?"``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(Path(a.decode(errors="replace")).name for a in cmdline[:2] if a) or "?"
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# Stopping
# --------------------------------------------------------------------------------------------


def stop_pids(pids: Sequence[int], *, grace: float = 5.0) -> list[int]:
    """SIGTERM each PID, wait up to ``grace`` seconds, SIGKILL survivors; return survivors.

    This process itself is never signalled. A PID that is already gone is skipped.
    """
    live = [p for p in dict.fromkeys(pids) if p != os.getpid() and pid_alive(p)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in live):
        time.sleep(0.05)
    for pid in live:
        if pid_alive(pid):
            log.info(
                "process %d (%s) ignored SIGTERM for %.0fs; killing it",
                pid,
                process_name(pid),
                grace,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    return [p for p in live if pid_alive(p)]


def kill_tree(pid: int, *, grace: float = 5.0) -> list[int]:
    """Stop ``pid`` and all its descendants (see :func:`stop_pids`); return survivors.

    Descendants are listed before anything is signalled, so children that the root's death
    would orphan are still found.
    """
    return stop_pids([pid, *descendants(pid)], grace=grace)


# --------------------------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------------------------


class ChildWatcher:
    """Records every descendant of this process while active, to stop them all afterwards.

    Some runtimes (Ray: raylet, workers, actors) leave processes that outlive their shutdown
    for tens of seconds as orphans, out of reach of a descendant scan made afterwards. A
    background scan every ``interval`` seconds keeps their PIDs (with start times) so that
    :meth:`stop_all` can stop them. Processes that existed before :meth:`__enter__` are ignored.

    Example:
        >>> with ChildWatcher() as watcher:
        ...     pass  # start things here
        >>> watcher.stop_all()
        []
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.started: dict[int, float | None] = {}
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        """Every PID seen while active, sorted."""
        return sorted(self.started)

    def scan(self) -> None:
        """Record the descendants that are new since :meth:`__enter__`."""
        for pid in descendants(os.getpid()):
            if pid not in self._before and pid not in self.started:
                self.started[pid] = create_time(pid)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.scan()

    def __enter__(self) -> ChildWatcher:
        self._before = set(descendants(os.getpid()))
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="child-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.scan()

    def stop_all(self, grace: float = 10.0) -> list[int]:
        """Stop every recorded process still running; return those that would not stop."""
        self.scan()
        return stop_pids(still_same(self.started), grace=grace)


@dataclass
class Spawned:
    """One program started by a :class:`ProcessGroup`, and every descendant seen so far."""

    name: str
    proc: subprocess.Popen[bytes]
    logfile: IO[bytes]
    seen: dict[int, float | None] = field(default_factory=dict)

    def refresh(self) -> None:
        """Remember every current descendant (pid → start time); they are stopped too."""
        for pid in descendants(self.proc.pid):
            if pid not in self.seen:
                self.seen[pid] = create_time(pid)


class ProcessGroup:
    """Programs started by a runner, each logging to ``<log_dir>/<name>.log``.

    :meth:`stop` stops every program with all its descendants — also those seen earlier by
    :meth:`refresh` that have since been orphaned — by PID, the last started first. Call
    :meth:`refresh` while waiting, so short-lived grandchildren are remembered.
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.items: list[Spawned] = []

    def spawn(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Spawned:
        """Start ``argv`` in ``log_dir`` (stdin closed, stdout+stderr to its log file)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = (self.log_dir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env or self.env),
                cwd=self.log_dir,
            )
        except BaseException:
            logfile.close()
            raise
        item = Spawned(name=name, proc=proc, logfile=logfile)
        self.items.append(item)
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return item

    def refresh(self) -> None:
        """Remember the current descendants of every program."""
        for item in self.items:
            item.refresh()

    def all_pids(self) -> list[int]:
        """Every PID of the group: the programs and every descendant seen."""
        out: list[int] = []
        for item in self.items:
            out.append(item.proc.pid)
            out.extend(sorted(item.seen))
        return out

    def stop(self, grace: float = 5.0) -> list[int]:
        """Stop the programs, last started first; return PIDs that could not be stopped."""
        self.refresh()
        survivors: list[int] = []
        for item in reversed(self.items):
            tree = [item.proc.pid, *descendants(item.proc.pid), *still_same(item.seen)]
            survivors += stop_pids(tree, grace=grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.proc.wait(timeout=1.0)
            item.logfile.close()
        if survivors:
            log.error("could not stop processes %s", survivors)
        return survivors


__all__ = [
    "LOOPBACK",
    "ChildWatcher",
    "ProcessGroup",
    "Spawned",
    "create_time",
    "descendants",
    "free_port",
    "free_ports",
    "kill_tree",
    "pid_alive",
    "process_name",
    "still_same",
    "stop_pids",
]
