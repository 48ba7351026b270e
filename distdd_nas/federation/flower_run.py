"""Run a server function on Flower: the simulation runtime (Ray) or the deployment runtime.

Both runners turn a study configuration into a Flower run config (see
:mod:`distdd_nas.federation.flower_app`), run the distdd-nas ServerApp/ClientApp, and read back
what the ServerApp wrote to ``out_dir``: the server function's result (``result.json`` +
``result.npz``), the communication ledger (``ledger.csv``), engine timings (``engine.json``) and
``status.json`` (written last, so a run without it did not finish).

*Simulation* (:func:`run_on_simulation`): ``flwr.simulation.run_simulation`` in this process,
ServerApp in a thread, ClientApps in Ray actors (``num_cpus`` actors at one CPU each).

*Deployment* (:func:`run_on_deployment`): one ``flower-superlink`` and one ``flower-supernode``
per partition (``--node-config "partition-id=i num-partitions=n"``), all ``--insecure`` on
127.0.0.1 with free ports, then ``flwr run`` on a generated app project whose pyproject names
the distdd-nas components and carries the run config. Every process this runner starts, and
every process those start (SuperExec, ``flwr-serverapp``, ``flwr-clientapp``), is stopped by
PID in a ``finally`` block, also when the run fails.

Every subprocess gets ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1``,
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` and a ``FLWR_HOME`` inside ``out_dir``.
Flower is imported lazily: this module imports without the ``flower`` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from distdd_nas.artifacts import json_default
from distdd_nas.errors import ConfigError, EngineError
from distdd_nas.federation.ledger import COLUMNS, Ledger, LedgerRow
from distdd_nas.federation.message import as_numpy

if TYPE_CHECKING:
    from distdd_nas.config import StudyConfig
    from distdd_nas.federation.flower_engine import FlowerEngine

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
RESULT_JSON = "result.json"
RESULT_NPZ = "result.npz"
LEDGER_CSV = "ledger.csv"
ENGINE_JSON = "engine.json"
LOOPBACK = "127.0.0.1"

#: Environment every Flower process gets (see environment.md, "Flower 1.42").
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


# --------------------------------------------------------------------------------------------
# Outputs of a run (written by the ServerApp, read by the runners)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowerRunResult:
    """What a Flower run produced, read back from its output directory.

    Attributes:
        out_dir: the run's directory.
        result: the JSON part of the server function's return value.
        arrays: the array part (top-level array values), from ``result.npz``.
        ledger: every metered payload of the run.
        engine: the ServerApp's record: timestamps, node map, per-round timings.
        timings: seconds measured by the runner: ``startup`` (call → engine ready),
            ``rounds`` (engine ready → server function done), ``teardown``, ``total``, plus
            runtime-specific entries.
        pids: every process id the runner saw belong to the run (all stopped on return).
    """

    out_dir: Path
    result: dict[str, Any]
    arrays: dict[str, np.ndarray]
    ledger: Ledger
    engine: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    pids: tuple[int, ...] = ()


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_run_outputs(
    out_dir: Path,
    *,
    result: Mapping[str, Any] | None,
    engine: FlowerEngine | None,
    info: Mapping[str, Any],
) -> None:
    """Write result, ledger and engine record to ``out_dir``; ``status.json`` last.

    Top-level array values of ``result`` (NumPy arrays or tensors) go to ``result.npz``, the
    rest to ``result.json``. ``info`` holding an ``"error"`` key marks the run as failed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for key, value in dict(result or {}).items():
        if isinstance(value, np.ndarray) or hasattr(value, "detach"):
            arrays[key] = value
        else:
            plain[key] = value
    _atomic_text(out_dir / RESULT_JSON,
                 json.dumps(plain, indent=2, sort_keys=True, default=json_default) + "\n")
    tmp_npz = out_dir / (RESULT_NPZ + ".tmp.npz")
    np.savez(tmp_npz, **as_numpy(arrays))  # type: ignore[arg-type]
    tmp_npz.replace(out_dir / RESULT_NPZ)
    record: dict[str, Any] = dict(info)
    if engine is not None:
        engine.ledger.to_frame().to_csv(out_dir / (LEDGER_CSV + ".tmp"), index=False)
        (out_dir / (LEDGER_CSV + ".tmp")).replace(out_dir / LEDGER_CSV)
        record["discovery_seconds"] = engine.discovery_seconds
        record["node_ids"] = {str(c): str(n) for c, n in engine.node_ids.items()}
        record["rounds"] = [asdict(t) for t in engine.timings]
    _atomic_text(out_dir / ENGINE_JSON,
                 json.dumps(record, indent=2, sort_keys=True, default=json_default) + "\n")
    status = {"status": "error" if "error" in info else "ok", "error": info.get("error", "")}
    _atomic_text(out_dir / STATUS_FILE, json.dumps(status) + "\n")


def read_status(out_dir: Path) -> dict[str, Any] | None:
    """``status.json`` of a run, or None while the run has not finished."""
    try:
        data = json.loads((out_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_ledger(path: Path) -> Ledger:
    """A ledger written as CSV by :func:`write_run_outputs`."""
    if not path.is_file():
        return Ledger()
    frame = pd.read_csv(path)
    if list(frame.columns) != list(COLUMNS):
        raise EngineError(f"{path} is not a ledger (columns {list(frame.columns)})")
    return Ledger(rows=[
        LedgerRow(int(r["round"]), int(r["client"]), r["direction"], str(r["kind"]),
                  int(r["bytes"]))
        for r in frame.to_dict("records")
    ])


def read_run_outputs(out_dir: Path) -> FlowerRunResult:
    """Read a finished run; raise :class:`EngineError` with the server's error when it failed."""
    status = read_status(out_dir)
    if status is None:
        raise EngineError(f"the Flower run wrote no {STATUS_FILE} in {out_dir}; it did not "
                          "finish — see the logs there")
    engine = json.loads((out_dir / ENGINE_JSON).read_text(encoding="utf-8"))
    if status.get("status") != "ok":
        raise EngineError(f"the Flower server function failed: {status.get('error')}; "
                          f"traceback in {out_dir / ENGINE_JSON}")
    result = json.loads((out_dir / RESULT_JSON).read_text(encoding="utf-8"))
    with np.load(out_dir / RESULT_NPZ, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return FlowerRunResult(out_dir=out_dir, result=result, arrays=arrays,
                           ledger=read_ledger(out_dir / LEDGER_CSV), engine=engine)


# --------------------------------------------------------------------------------------------
# Run config and environment
# --------------------------------------------------------------------------------------------


def build_run_config(
    config: StudyConfig | Mapping[str, Any] | None,
    *,
    server_fn: str,
    num_clients: int | None,
    out_dir: Path,
    tasks: str | None = None,
    client_data: str | None = None,
    round_timeout: float | None = None,
    connect_timeout: float = 120.0,
    extra: Mapping[str, bool | int | float | str] | None = None,
) -> dict[str, bool | int | float | str]:
    """The Flower run config of a distdd-nas run (keys documented in ``flower_app``)."""
    from distdd_nas.federation.flower_app import DEFAULT_CLIENT_DATA, DEFAULT_TASKS

    study: dict[str, Any] | None
    if config is None:
        study = None
    elif hasattr(config, "to_dict"):
        study = config.to_dict()
    else:
        study = dict(config)
    if num_clients is None:
        try:
            num_clients = int(study["partition"]["num_clients"])  # type: ignore[index]
        except (TypeError, KeyError) as err:
            raise ConfigError("num_clients is missing and the config has no "
                              "partition.num_clients; pass num_clients") from err
    if num_clients < 1:
        raise ConfigError(f"num_clients={num_clients}; a Flower run needs at least one client")
    rc: dict[str, bool | int | float | str] = {
        "server-fn": server_fn,
        "out-dir": str(Path(out_dir).resolve()),
        "num-clients": int(num_clients),
        "study-config": json.dumps(study, sort_keys=True) if study is not None else "",
        "tasks": tasks or DEFAULT_TASKS,
        "client-data": client_data or DEFAULT_CLIENT_DATA,
        "round-timeout": float(round_timeout or 0.0),
        "connect-timeout": float(connect_timeout),
    }
    for key, value in dict(extra or {}).items():
        if key in rc:
            raise ConfigError(f"extra run-config key {key!r} collides with a reserved key")
        if not isinstance(value, bool | int | float | str):
            raise ConfigError(f"extra run-config value {key!r} must be bool, int, float or str")
        rc[key] = value
    return rc


def flower_env(flwr_home: Path, *, base: Mapping[str, str] | None = None,
               python_path: Sequence[str | Path] = ()) -> dict[str, str]:
    """Environment for a Flower process: quiet, offline, FLWR_HOME in the run, venv on PATH."""
    env = dict(os.environ if base is None else base)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    extra = [str(Path(p).resolve()) for p in python_path]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([*extra, *filter(None, [env.get("PYTHONPATH")])])
    env["NO_PROXY"] = env["no_proxy"] = ",".join(["127.0.0.1", "localhost", "::1"])
    return env


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str], *, also_restore: Sequence[str] = ()
                     ) -> Iterator[None]:
    keys = set(values) | set(also_restore)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def _timings(engine: Mapping[str, Any], *, t_start: float, t_end: float) -> dict[str, float]:
    ready = float(engine.get("engine_ready_at", t_start))
    done = float(engine.get("finished_at", t_end))
    rounds = engine.get("rounds", [])
    per_round = [float(r["seconds"]) for r in rounds]
    return {
        "startup": ready - t_start,
        "discovery": float(engine.get("discovery_seconds", 0.0)),
        "rounds": done - ready,
        "round_mean": float(np.mean(per_round)) if per_round else 0.0,
        "teardown": t_end - done,
        "total": t_end - t_start,
    }


# --------------------------------------------------------------------------------------------
# Processes: stop by PID, whole trees
# --------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (children first found, recursively)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:  # pragma: no cover - psutil comes with ray; /proc fallback on Linux
        pass
    except Exception:
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies, already exited but not reaped, count as gone)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except ImportError:  # pragma: no cover
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")
    except Exception:
        return False


def create_time(pid: int) -> float | None:
    """Start time of ``pid`` (guards against PID reuse), or None when it is gone."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except ImportError:  # pragma: no cover
        try:
            return float(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            return None
    except Exception:
        return None


def still_same(started: Mapping[int, float | None]) -> list[int]:
    """The PIDs of ``started`` (pid → create time) that still run the same process."""
    return [pid for pid, t in started.items() if t is not None and create_time(pid) == t]


def _process_name(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(Path(a.decode(errors="replace")).name for a in cmdline[:2] if a)
    except OSError:
        return "?"


def stop_pids(pids: Sequence[int], *, grace: float = 5.0) -> list[int]:
    """SIGTERM each PID, wait up to ``grace`` seconds, SIGKILL survivors; return survivors."""
    live = [p for p in dict.fromkeys(pids) if p != os.getpid() and pid_alive(p)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in live):
        time.sleep(0.05)
    for pid in live:
        if pid_alive(pid):
            log.info("process %d (%s) ignored SIGTERM for %.0fs; killing it", pid,
                     _process_name(pid), grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    return [p for p in live if pid_alive(p)]


class _ChildWatcher:
    """Records every descendant of this process while active (Ray's raylet, workers, actors).

    Ray workers outlive ``ray.shutdown()`` for tens of seconds as orphans, out of reach of a
    descendant scan made afterwards; a background scan every ``interval`` seconds keeps their
    PIDs so that :meth:`stop_all` can stop them. Processes that existed before are ignored.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.started: dict[int, float | None] = {}
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        return sorted(self.started)

    def _scan(self) -> None:
        for pid in descendants(os.getpid()):
            if pid not in self._before and pid not in self.started:
                self.started[pid] = create_time(pid)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._scan()

    def __enter__(self) -> _ChildWatcher:
        self._before = set(descendants(os.getpid()))
        self._thread = threading.Thread(target=self._loop, name="flower-child-watcher",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._scan()

    def stop_all(self, grace: float = 10.0) -> list[int]:
        """Stop every recorded process still running; return those that would not stop."""
        self._scan()
        return stop_pids(still_same(self.started), grace=grace)


@dataclass
class _Spawned:
    name: str
    proc: subprocess.Popen[bytes]
    logfile: IO[bytes]
    seen: dict[int, float | None] = field(default_factory=dict)

    def refresh(self) -> None:
        """Remember every descendant seen so far (they are stopped too)."""
        for pid in descendants(self.proc.pid):
            if pid not in self.seen:
                self.seen[pid] = create_time(pid)


class _ProcessGroup:
    """Processes started by a runner; stopped (with all descendants) by PID on exit."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.items: list[_Spawned] = []

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
              ) -> _Spawned:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(list(argv), stdout=logfile, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env or self.env),
                                cwd=self.log_dir)
        item = _Spawned(name=name, proc=proc, logfile=logfile)
        self.items.append(item)
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return item

    def refresh(self) -> None:
        for item in self.items:
            item.refresh()

    def all_pids(self) -> list[int]:
        out: list[int] = []
        for item in self.items:
            out.append(item.proc.pid)
            out.extend(sorted(item.seen))
        return out

    def stop(self) -> list[int]:
        """Stop clients first, then the SuperLink; return PIDs that could not be stopped."""
        self.refresh()
        survivors: list[int] = []
        for item in reversed(self.items):
            tree = [item.proc.pid, *descendants(item.proc.pid), *still_same(item.seen)]
            survivors += stop_pids(tree)
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.proc.wait(timeout=1.0)
            item.logfile.close()
        if survivors:
            log.error("could not stop Flower processes %s", survivors)
        return survivors


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound and released; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Simulation runtime
# --------------------------------------------------------------------------------------------


def run_on_simulation(
    config: StudyConfig | Mapping[str, Any] | None,
    *,
    server_fn: str,
    out_dir: Path,
    num_clients: int | None = None,
    tasks: str | None = None,
    client_data: str | None = None,
    num_cpus: int = 2,
    round_timeout: float | None = None,
    connect_timeout: float = 120.0,
    extra: Mapping[str, bool | int | float | str] | None = None,
    flower_log_level: int = logging.ERROR,
) -> FlowerRunResult:
    """Run ``server_fn`` on Flower's simulation runtime (Ray) and return its outputs.

    Args:
        config: the study (``StudyConfig`` or its ``to_dict()``), or None for toy tasks.
        server_fn: ``"module:function"`` taking a :class:`~.flower_app.ServerRun`.
        out_dir: run directory (outputs, ``flwr-home``).
        num_clients: number of virtual SuperNodes (default: ``partition.num_clients``).
        tasks: task registry ``"module:function"`` (default: the distdd-nas registry).
        client_data: client-data factory ``"module:function"`` (default: from the study).
        num_cpus: CPUs given to Ray; each ClientApp actor takes one.
        round_timeout: seconds per round (None: wait for every reply).
        connect_timeout: seconds to wait for the virtual nodes.
        extra: additional run-config entries for the server function.
        flower_log_level: level of Flower's own logger during the run (quiet by default).
    """
    from distdd_nas.federation.flower_engine import require_flower

    require_flower()
    from flwr.simulation import run_simulation

    from distdd_nas.federation.flower_app import make_client_app, make_server_app

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATUS_FILE).unlink(missing_ok=True)
    rc = build_run_config(config, server_fn=server_fn, num_clients=num_clients, out_dir=out_dir,
                          tasks=tasks, client_data=client_data, round_timeout=round_timeout,
                          connect_timeout=connect_timeout, extra=extra)
    nodes = int(rc["num-clients"])
    env = {k: v for k, v in flower_env(out_dir / "flwr-home").items()
           if k in FLOWER_ENV or k == "FLWR_HOME"}
    env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    backend = {
        "init_args": {"num_cpus": max(1, num_cpus), "num_gpus": 0,
                      "logging_level": "ERROR", "log_to_driver": False},
        "client_resources": {"num_cpus": 1, "num_gpus": 0},
    }
    watcher = _ChildWatcher()
    t_start = time.time()
    try:
        with watcher, _patched_environ(env, also_restore=("PYTHONPATH",)), \
                _logger_level("flwr", flower_log_level):
            run_simulation(server_app=make_server_app(rc), client_app=make_client_app(rc),
                           num_supernodes=nodes, backend_config=backend)  # type: ignore[arg-type]
    except Exception as err:
        status = read_status(out_dir)
        if status is not None and status.get("status") != "ok":
            raise EngineError(f"the Flower server function failed: {status.get('error')}") from err
        raise EngineError(f"the Flower simulation failed: {err}") from err
    finally:
        # Flower shuts Ray down, but Ray's actor processes linger for a while as orphans:
        # stop every process the run started, by PID.
        t_end = time.time()
        survivors = watcher.stop_all()
        if survivors:
            log.error("could not stop processes left by the simulation: %s", survivors)
    out = read_run_outputs(out_dir)
    timings = _timings(out.engine, t_start=t_start, t_end=t_end)
    log.info("simulation: start-up %.1fs, rounds %.1fs, total %.1fs", timings["startup"],
             timings["rounds"], timings["total"])
    return FlowerRunResult(out_dir=out.out_dir, result=out.result, arrays=out.arrays,
                           ledger=out.ledger, engine=out.engine, timings=timings,
                           pids=tuple(watcher.pids))


# --------------------------------------------------------------------------------------------
# Deployment runtime
# --------------------------------------------------------------------------------------------


def _toml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a JSON string is a valid TOML basic string


APP_ENTRY_MODULE = "distdd_entry"


def write_app_project(
    app_dir: Path,
    run_config: Mapping[str, bool | int | float | str],
    *,
    client_app: str | None = None,
    server_app: str | None = None,
) -> Path:
    """Write the Flower app project for ``flwr run``; return its pyproject path.

    ``flwr new`` needs the internet, so the project is written by hand: a pyproject whose
    ``[tool.flwr.app.config]`` carries the run config (it becomes every node's run config)
    and a two-line entry module that re-exports the installed components. The entry module
    keeps ``flwr run`` fast: Flower checks component references by looking the module up,
    which for ``distdd_nas.federation.flower_app`` would import the whole package (torch).
    """
    from distdd_nas.federation.flower_app import CLIENT_APP_REF, SERVER_APP_REF

    app_dir.mkdir(parents=True, exist_ok=True)
    refs = {"server_app": server_app or SERVER_APP_REF, "client_app": client_app or CLIENT_APP_REF}
    entry = [
        '"""Generated by distdd_nas.federation.flower_run: the installed app components."""',
        "",
        "import functools",
        "import importlib",
        "",
    ]
    for name, ref in refs.items():
        module, _, attr = ref.partition(":")
        entry.append(f"{name} = functools.reduce(getattr, {attr.split('.')!r}, "
                     f"importlib.import_module({module!r}))")
    _atomic_text(app_dir / f"{APP_ENTRY_MODULE}.py", "\n".join(entry) + "\n")
    lines = [
        "# Generated by distdd_nas.federation.flower_run; the components are installed code.",
        "[project]",
        'name = "distdd-nas-flower-app"',
        'version = "1.0.0"',
        'description = "distdd-nas ServerApp and ClientApp"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "distdd-nas"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{APP_ENTRY_MODULE}:server_app"',
        f'clientapp = "{APP_ENTRY_MODULE}:client_app"',
        "",
        "[tool.flwr.app.config]",
        *(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in run_config.items()),
        "",
    ]
    path = app_dir / "pyproject.toml"
    _atomic_text(path, "\n".join(lines))
    return path


def _write_cli_config(flwr_home: Path, *, name: str, port: int) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    text = (f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
            f'address = "{LOOPBACK}:{port}"\ninsecure = true\n')
    _atomic_text(flwr_home / "config.toml", text)


def _parse_cli_json(text: str) -> dict[str, Any]:
    """The JSON object a ``flwr … --format json`` command printed (after any other output)."""
    starts = [i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")]
    for start in starts:
        try:
            data = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _flwr_json(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float
               ) -> dict[str, Any]:
    """Run a ``flwr … --format json`` command; its JSON output (errors included)."""
    done = subprocess.run(list(argv), env=dict(env), cwd=cwd, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    data = _parse_cli_json(done.stdout.decode(errors="replace"))
    if not data:
        text = (done.stderr or done.stdout).decode(errors="replace").strip()
        return {"success": False, "error-message": text[-2000:] or "no output"}
    return data


def run_on_deployment(
    config: StudyConfig | Mapping[str, Any] | None,
    *,
    server_fn: str,
    out_dir: Path,
    num_clients: int | None = None,
    tasks: str | None = None,
    client_data: str | None = None,
    round_timeout: float | None = None,
    connect_timeout: float = 120.0,
    startup_timeout: float = 60.0,
    run_timeout: float = 3600.0,
    extra: Mapping[str, bool | int | float | str] | None = None,
    python_path: Sequence[str | Path] = (),
    poll_interval: float = 0.1,
) -> FlowerRunResult:
    """Run ``server_fn`` on Flower's deployment runtime on loopback and return its outputs.

    Starts ``flower-superlink`` and ``num_clients`` × ``flower-supernode`` (``--insecure``,
    127.0.0.1, free ports), submits the app with ``flwr run``, waits for ``status.json``, and
    stops every process it started — and their children — by PID, also on failure.

    Args:
        config, server_fn, out_dir, num_clients, tasks, client_data, round_timeout,
            connect_timeout, extra: as for :func:`run_on_simulation`.
        startup_timeout: seconds for the SuperLink to answer its health check and for
            ``flwr run`` to submit.
        run_timeout: seconds for the whole run once submitted.
        python_path: extra ``PYTHONPATH`` entries for the app processes (e.g. a test tree).
        poll_interval: SuperExec's task poll interval in seconds (Flower's default is 1 s).
    """
    from distdd_nas.federation.flower_engine import require_flower

    require_flower()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATUS_FILE).unlink(missing_ok=True)
    rc = build_run_config(config, server_fn=server_fn, num_clients=num_clients, out_dir=out_dir,
                          tasks=tasks, client_data=client_data, round_timeout=round_timeout,
                          connect_timeout=connect_timeout, extra=extra)
    n = int(rc["num-clients"])
    home = out_dir / "flwr-home"
    logs = out_dir / "logs"
    app_dir = write_app_project(out_dir / "app", rc).parent
    bindir = Path(sys.executable).parent
    base = flower_env(home / "cli", python_path=python_path)
    base["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(max(0.01, poll_interval))
    link_port, *node_ports = _free_ports(n + 1)
    _write_cli_config(home / "cli", name="distdd", port=link_port)
    group = _ProcessGroup(logs, base)
    timings: dict[str, float] = {}
    t_start = time.time()
    try:
        link = group.spawn("superlink", [
            str(bindir / "flower-superlink"), "--insecure", "--host", LOOPBACK,
            "--port", str(link_port), "--disable-runtime-dependency-installation",
        ], env={**base, "FLWR_HOME": str(home / "superlink")})
        deadline = time.monotonic() + startup_timeout
        while not _http_ok(f"http://{LOOPBACK}:{link_port}/health"):
            if link.proc.poll() is not None or time.monotonic() > deadline:
                raise EngineError(f"flower-superlink did not start on {LOOPBACK}:{link_port}; "
                                  f"log:\n{_tail(logs / 'superlink.log')}")
            time.sleep(0.05)
        timings["superlink_ready"] = time.time() - t_start
        for cid, port in enumerate(node_ports):
            group.spawn(f"supernode-{cid}", [
                str(bindir / "flower-supernode"), "--insecure",
                "--superlink", f"{LOOPBACK}:{link_port}", "--host", LOOPBACK, "--port", str(port),
                "--node-config", f"partition-id={cid} num-partitions={n}",
            ], env={**base, "FLWR_HOME": str(home / f"supernode-{cid}")})
        t_submit = time.time()
        submitted = _flwr_json(
            [str(bindir / "flwr"), "run", str(app_dir), "distdd", "--format", "json"],
            env=base, cwd=out_dir, timeout=max(startup_timeout, 60.0))
        if not submitted.get("success"):
            raise EngineError(f"flwr run failed: {submitted.get('error-message', submitted)}")
        run_id = str(submitted.get("run-id"))
        timings["submit"] = time.time() - t_submit
        log.info("deployment run %s submitted (%d SuperNodes on %s:%d)", run_id, n, LOOPBACK,
                 link_port)
        _wait_for_run(group, out_dir=out_dir, run_id=run_id, env=base, timeout=run_timeout)
        t_end = time.time()
    finally:
        survivors = group.stop()
        pids = tuple(group.all_pids())
    if survivors:
        raise EngineError(f"could not stop Flower processes {survivors}; kill them by PID")
    out = read_run_outputs(out_dir)
    timings = {**_timings(out.engine, t_start=t_start, t_end=t_end), **timings}
    timings["stop"] = time.time() - t_end
    log.info("deployment: start-up %.1fs, rounds %.1fs, total %.1fs", timings["startup"],
             timings["rounds"], timings["total"])
    return FlowerRunResult(out_dir=out.out_dir, result=out.result, arrays=out.arrays,
                           ledger=out.ledger, engine=out.engine, timings=timings, pids=pids)


def _wait_for_run(group: _ProcessGroup, *, out_dir: Path, run_id: str,
                  env: Mapping[str, str], timeout: float) -> None:
    """Wait for ``status.json``; fail early when the SuperLink dies or the run fails.

    A ServerApp that dies before writing its status (e.g. killed) is noticed through
    ``flwr ls``, run in the background every few seconds so it never delays the wait.
    """
    deadline = time.monotonic() + timeout
    next_probe = time.monotonic() + 5.0
    probe: subprocess.Popen[bytes] | None = None
    finished_at: float | None = None
    state = ""
    link = group.items[0]
    argv = [str(Path(sys.executable).parent / "flwr"), "ls", "distdd", "--run-id", run_id,
            "--format", "json"]
    try:
        while read_status(out_dir) is None:
            group.refresh()
            if link.proc.poll() is not None:
                raise EngineError(f"flower-superlink exited ({link.proc.returncode}) during "
                                  f"the run; log:\n{_tail(group.log_dir / 'superlink.log')}")
            now = time.monotonic()
            if now > deadline:
                raise EngineError(f"the Flower run {run_id} did not finish within "
                                  f"{timeout:.0f}s; logs in {group.log_dir}")
            if probe is None and now >= next_probe and finished_at is None:
                probe = subprocess.Popen(argv, env=dict(env), cwd=out_dir,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL)
            elif probe is not None and probe.poll() is not None:
                stdout = probe.stdout.read() if probe.stdout is not None else b""
                listing = _parse_cli_json(stdout.decode(errors="replace"))
                runs = listing.get("runs") or [{}]
                state = str(runs[0].get("status", ""))
                if state.startswith("finished"):
                    finished_at = time.monotonic()
                probe, next_probe = None, time.monotonic() + 5.0
            if finished_at is not None and time.monotonic() - finished_at > 3.0 \
                    and read_status(out_dir) is None:
                raise EngineError(f"the Flower run {run_id} ended ({state}) without writing "
                                  f"its outputs; logs in {group.log_dir}")
            time.sleep(0.1)
    finally:
        if probe is not None:
            stop_pids([probe.pid], grace=2.0)
            probe.wait()


def run_on_flower(config: StudyConfig, *, server_fn: str, out_dir: Path, **options: Any
                  ) -> FlowerRunResult:
    """Run ``server_fn`` on the runtime named by ``config.federation.flower_backend``.

    ``options`` go to :func:`run_on_simulation` or :func:`run_on_deployment`.
    """
    backend = config.federation.flower_backend
    if backend == "simulation":
        return run_on_simulation(config, server_fn=server_fn, out_dir=out_dir, **options)
    if backend == "deployment":
        return run_on_deployment(config, server_fn=server_fn, out_dir=out_dir, **options)
    raise ConfigError(f"unknown federation.flower_backend {backend!r}; use simulation or "
                      "deployment")
