"""Run a server function on Flower's deployment runtime, all on loopback.

One ``flower-superlink`` and one ``flower-supernode`` per partition (``--node-config
"partition-id=i num-partitions=n"``), all ``--insecure`` on 127.0.0.1 with free ports, then
``flwr run`` on a generated app project (:mod:`.project`). Every process this runner starts, and
every process those start (SuperExec, ``flwr-serverapp``, ``flwr-clientapp``), is stopped by PID
in a ``finally`` block, also when the run fails (:mod:`distdd_nas.processes`).

Every subprocess gets the environment of :func:`.launch.flower_env`: Flower's telemetry, update
check and dependency installation off, and a ``FLWR_HOME`` inside ``out_dir``. Flower is not
imported here (only its command-line programs run): this module imports without the extra.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distdd_nas.errors import EngineError
from distdd_nas.federation.flower.launch import flower_env, log_timings, prepare_run, read_result
from distdd_nas.federation.flower.outputs import FlowerRunResult, read_status
from distdd_nas.federation.flower.project import (
    RunConfigValue,
    flwr_json,
    parse_cli_json,
    write_app_project,
    write_cli_config,
)
from distdd_nas.processes import LOOPBACK, ProcessGroup, free_ports, stop_pids

if TYPE_CHECKING:
    from distdd_nas.config import StudyConfig

log = logging.getLogger(__name__)


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


def _start_federation(
    group: ProcessGroup, *, home: Path, ports: Sequence[int], startup_timeout: float
) -> float:
    """Start the SuperLink on ``ports[0]``, wait for its health check, then one SuperNode per
    remaining port (partition ids in order); return when the SuperLink was ready."""
    bindir = Path(sys.executable).parent
    link_port, *node_ports = ports
    link = group.spawn(
        "superlink",
        [
            str(bindir / "flower-superlink"),
            "--insecure",
            "--host",
            LOOPBACK,
            "--port",
            str(link_port),
            "--disable-runtime-dependency-installation",
        ],
        env={**group.env, "FLWR_HOME": str(home / "superlink")},
    )
    deadline = time.monotonic() + startup_timeout
    while not _http_ok(f"http://{LOOPBACK}:{link_port}/health"):
        if link.proc.poll() is not None or time.monotonic() > deadline:
            raise EngineError(
                f"flower-superlink did not start on {LOOPBACK}:{link_port}; "
                f"log:\n{_tail(group.log_dir / 'superlink.log')}"
            )
        time.sleep(0.05)
    ready = time.time()
    for cid, port in enumerate(node_ports):
        group.spawn(
            f"supernode-{cid}",
            [
                str(bindir / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"{LOOPBACK}:{link_port}",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--node-config",
                f"partition-id={cid} num-partitions={len(node_ports)}",
            ],
            env={**group.env, "FLWR_HOME": str(home / f"supernode-{cid}")},
        )
    return ready


def _submit(app_dir: Path, *, env: Mapping[str, str], out_dir: Path, timeout: float) -> str:
    """Submit the app project with ``flwr run`` to the ``distdd`` federation; its run id."""
    flwr = str(Path(sys.executable).parent / "flwr")
    submitted = flwr_json(
        [flwr, "run", str(app_dir), "distdd", "--format", "json"],
        env=env,
        cwd=out_dir,
        timeout=timeout,
    )
    if not submitted.get("success"):
        raise EngineError(f"flwr run failed: {submitted.get('error-message', submitted)}")
    return str(submitted.get("run-id"))


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
    extra: Mapping[str, RunConfigValue] | None = None,
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
    out_dir, rc = prepare_run(
        out_dir,
        config,
        server_fn=server_fn,
        num_clients=num_clients,
        tasks=tasks,
        client_data=client_data,
        round_timeout=round_timeout,
        connect_timeout=connect_timeout,
        extra=extra,
    )
    n = int(rc["num-clients"])
    home = out_dir / "flwr-home"
    app_dir = write_app_project(out_dir / "app", rc).parent
    base = flower_env(home / "cli", python_path=python_path)
    base["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(max(0.01, poll_interval))
    ports = free_ports(n + 1)
    write_cli_config(home / "cli", name="distdd", port=ports[0])
    group = ProcessGroup(out_dir / "logs", base)
    timings: dict[str, float] = {}
    t_start = time.time()
    try:
        ready = _start_federation(group, home=home, ports=ports, startup_timeout=startup_timeout)
        timings["superlink_ready"] = ready - t_start
        t_submit = time.time()
        run_id = _submit(app_dir, env=base, out_dir=out_dir, timeout=max(startup_timeout, 60.0))
        timings["submit"] = time.time() - t_submit
        log.info(
            "deployment run %s submitted (%d SuperNodes on %s:%d)", run_id, n, LOOPBACK, ports[0]
        )
        _wait_for_run(group, out_dir=out_dir, run_id=run_id, env=base, timeout=run_timeout)
        t_end = time.time()
    finally:
        survivors = group.stop()
        pids = tuple(group.all_pids())
    if survivors:
        raise EngineError(f"could not stop Flower processes {survivors}; kill them by PID")
    result = read_result(out_dir, t_start=t_start, t_end=t_end, pids=pids, measured=timings)
    result.timings["stop"] = time.time() - t_end
    log_timings("deployment", result.timings)
    return result


def _wait_for_run(
    group: ProcessGroup, *, out_dir: Path, run_id: str, env: Mapping[str, str], timeout: float
) -> None:
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
    argv = [
        str(Path(sys.executable).parent / "flwr"),
        "ls",
        "distdd",
        "--run-id",
        run_id,
        "--format",
        "json",
    ]
    try:
        while read_status(out_dir) is None:
            group.refresh()
            if link.proc.poll() is not None:
                raise EngineError(
                    f"flower-superlink exited ({link.proc.returncode}) during "
                    f"the run; log:\n{_tail(group.log_dir / 'superlink.log')}"
                )
            now = time.monotonic()
            if now > deadline:
                raise EngineError(
                    f"the Flower run {run_id} did not finish within "
                    f"{timeout:.0f}s; logs in {group.log_dir}"
                )
            if probe is None and now >= next_probe and finished_at is None:
                probe = subprocess.Popen(
                    argv,
                    env=dict(env),
                    cwd=out_dir,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                )
            elif probe is not None and probe.poll() is not None:
                stdout = probe.stdout.read() if probe.stdout is not None else b""
                listing = parse_cli_json(stdout.decode(errors="replace"))
                state = str((listing.get("runs") or [{}])[0].get("status", ""))
                if state.startswith("finished"):
                    finished_at = time.monotonic()
                probe, next_probe = None, time.monotonic() + 5.0
            if (
                finished_at is not None
                and time.monotonic() - finished_at > 3.0
                and read_status(out_dir) is None
            ):
                raise EngineError(
                    f"the Flower run {run_id} ended ({state}) without writing "
                    f"its outputs; logs in {group.log_dir}"
                )
            time.sleep(0.1)
    finally:
        if probe is not None:
            stop_pids([probe.pid], grace=2.0)
            probe.wait()


__all__ = ["run_on_deployment"]
