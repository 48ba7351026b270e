"""Run a server function on Flower's deployment runtime, all on loopback.

One ``flower-superlink`` and one ``flower-supernode`` per partition (``--node-config
"partition-id=i num-partitions=n"``) on 127.0.0.1 with free ports, then ``flwr run`` on a
generated app project (:mod:`.project`).

Secure by default: the runner writes a CA, a server certificate and one key pair per SuperNode
into ``<out_dir>/certificates`` (:mod:`.security`), starts the SuperLink with TLS and
``--enable-supernode-auth``, registers every SuperNode's public key with ``flwr supernode
register`` and starts each SuperNode with ``--root-certificates`` and its private key; the
``flwr`` CLI verifies the SuperLink with the same CA. A SuperNode whose key was not registered
is refused (it gets no node id and exits). ``secure=False`` runs everything ``--insecure``.

Every process this runner starts, and every process those start (SuperExec, ``flwr-serverapp``,
``flwr-clientapp``), is stopped by PID in a ``finally`` block, also when the run fails
(:mod:`distdd_nas.processes`).

Every subprocess gets the environment of :func:`.launch.flower_env`: Flower's telemetry, update
check and dependency installation off, and a ``FLWR_HOME`` inside ``out_dir``. Flower is not
imported here (only its command-line programs run): this module imports without the extra.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distdd_nas.errors import ConfigError, EngineError
from distdd_nas.federation.flower.launch import flower_env, log_timings, prepare_run, read_result
from distdd_nas.federation.flower.outputs import FlowerRunResult, read_status
from distdd_nas.federation.flower.project import (
    RunConfigValue,
    flwr_json,
    parse_cli_json,
    write_app_project,
    write_cli_config,
)
from distdd_nas.federation.flower.security import (
    FederationCertificates,
    FederationSecurity,
    write_federation,
)
from distdd_nas.processes import LOOPBACK, ProcessGroup, free_ports, stop_pids

if TYPE_CHECKING:
    from distdd_nas.config import StudyConfig

log = logging.getLogger(__name__)

#: The name of the SuperLink connection in the ``flwr`` CLI's config (``flwr run APP NAME``).
FEDERATION = "distdd"


def _flwr() -> str:
    return str(Path(sys.executable).parent / "flwr")


def _http_ok(url: str, *, cafile: Path | None = None) -> bool:
    """True when ``url`` answers 2xx (HTTPS verified against ``cafile`` when given)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cafile is not None:
        context = ssl.create_default_context(cafile=str(cafile))
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
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


def start_superlink(
    group: ProcessGroup,
    *,
    home: Path,
    port: int,
    security: FederationSecurity | None,
    startup_timeout: float,
) -> float:
    """Start the SuperLink on loopback ``port`` (TLS and node authentication with
    ``security``, else ``--insecure``) and wait until its health check answers (verifying its
    certificate), so nothing connects before it listens; the time it was ready."""
    bindir = Path(sys.executable).parent
    tls = ["--insecure"] if security is None else security.superlink_args()
    link = group.spawn(
        "superlink",
        [
            str(bindir / "flower-superlink"),
            *tls,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ],
        env={**group.env, "FLWR_HOME": str(home / "superlink")},
    )
    scheme, cafile = (
        ("http", None) if security is None else ("https", security.certificates.ca_certfile)
    )
    deadline = time.monotonic() + startup_timeout
    while not _http_ok(f"{scheme}://{LOOPBACK}:{port}/health", cafile=cafile):
        if link.proc.poll() is not None or time.monotonic() > deadline:
            raise EngineError(
                f"flower-superlink did not start on {LOOPBACK}:{port}; "
                f"log:\n{_tail(group.log_dir / 'superlink.log')}"
            )
        time.sleep(0.05)
    return time.time()


def register_nodes(
    security: FederationSecurity, *, env: Mapping[str, str], cwd: Path, timeout: float
) -> list[int]:
    """Register every SuperNode's public key with the SuperLink the ``flwr`` CLI in ``env``
    points at (``flwr supernode register``, a few at once); the node ids, in key order.

    With ``--enable-supernode-auth`` only a registered key can activate a SuperNode.
    """

    def register(public_key: Path) -> dict[str, Any]:
        argv = [_flwr(), "supernode", "register", str(public_key), FEDERATION, "--format", "json"]
        return flwr_json(argv, env=env, cwd=cwd, timeout=timeout)

    keys = [key.public_key for key in security.node_keys]
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(keys)))) as pool:
        answers = list(pool.map(register, keys))
    for key, answer in zip(keys, answers, strict=True):
        if not answer.get("success"):
            raise EngineError(
                f"could not register SuperNode key {key}: {answer.get('error-message', answer)}"
            )
    return [int(answer["node-id"]) for answer in answers]


def start_supernodes(
    group: ProcessGroup,
    *,
    home: Path,
    link_port: int,
    ports: Sequence[int],
    security: FederationSecurity | None,
) -> None:
    """Start one SuperNode per runtime-API port, partition ids in port order; with
    ``security`` each verifies the SuperLink against the CA and signs with its own key."""
    bindir = Path(sys.executable).parent
    for cid, port in enumerate(ports):
        tls = ["--insecure"] if security is None else security.supernode_args(cid)
        group.spawn(
            f"supernode-{cid}",
            [
                str(bindir / "flower-supernode"),
                *tls,
                "--superlink",
                f"{LOOPBACK}:{link_port}",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--node-config",
                f"partition-id={cid} num-partitions={len(ports)}",
            ],
            env={**group.env, "FLWR_HOME": str(home / f"supernode-{cid}")},
        )


def _start_federation(
    group: ProcessGroup,
    *,
    home: Path,
    ports: Sequence[int],
    security: FederationSecurity | None,
    startup_timeout: float,
) -> dict[str, float]:
    """SuperLink on ``ports[0]``, the SuperNodes' keys registered (secure runs), then one
    SuperNode per remaining port; the seconds to ``superlink_ready`` and to ``register``."""
    t_start = time.time()
    timings: dict[str, float] = {}
    link_port, *node_ports = ports
    ready = start_superlink(
        group, home=home, port=link_port, security=security, startup_timeout=startup_timeout
    )
    timings["superlink_ready"] = ready - t_start
    if security is not None:
        timeout = max(startup_timeout, 60.0)
        ids = register_nodes(security, env=group.env, cwd=group.log_dir, timeout=timeout)
        timings["register"] = time.time() - ready
        log.info("registered %d SuperNode keys (node ids %s)", len(ids), ids)
    start_supernodes(group, home=home, link_port=link_port, ports=node_ports, security=security)
    mode = "insecure" if security is None else "TLS, SuperNode authentication"
    log.info(
        "%d SuperNodes started, SuperLink %s:%d (%s)", len(node_ports), LOOPBACK, link_port, mode
    )
    return timings


def _prepare_security(
    directory: Path, num_nodes: int, *, secure: bool, certificates: FederationCertificates | None
) -> FederationSecurity | None:
    """The run's TLS files and SuperNode keys (written into ``directory``), or None when
    ``secure`` is off."""
    if secure:
        return write_federation(directory, num_nodes, certificates=certificates)
    if certificates is not None:
        raise ConfigError("certificates were given to an insecure run; drop them or keep secure")
    log.warning("Flower deployment without TLS or SuperNode authentication (secure=False)")
    return None


def _prepare_federation(
    out_dir: Path, num_nodes: int, *, secure: bool, certificates: FederationCertificates | None
) -> tuple[FederationSecurity | None, list[int]]:
    """Security files (:func:`_prepare_security`), free ports (SuperLink first, then one per
    SuperNode) and the ``flwr`` CLI's config pointing at the SuperLink (trusting the CA)."""
    security = _prepare_security(
        out_dir / "certificates", num_nodes, secure=secure, certificates=certificates
    )
    ports = free_ports(num_nodes + 1)
    cafile = None if security is None else security.certificates.ca_certfile
    cli_home = out_dir / "flwr-home" / "cli"
    write_cli_config(cli_home, name=FEDERATION, port=ports[0], root_certificates=cafile)
    return security, ports


def _submit(app_dir: Path, *, env: Mapping[str, str], out_dir: Path, timeout: float) -> str:
    """Submit the app project with ``flwr run`` to the :data:`FEDERATION`; its run id."""
    submitted = flwr_json(
        [_flwr(), "run", str(app_dir), FEDERATION, "--format", "json"],
        env=env,
        cwd=out_dir,
        timeout=timeout,
    )
    if not submitted.get("success"):
        raise EngineError(f"flwr run failed: {submitted.get('error-message', submitted)}")
    run_id = str(submitted.get("run-id"))
    log.info("deployment run %s submitted", run_id)
    return run_id


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
    secure: bool = True,
    certificates: FederationCertificates | None = None,
) -> FlowerRunResult:
    """Run ``server_fn`` on Flower's deployment runtime on loopback and return its outputs.

    Starts ``flower-superlink`` and ``num_clients`` × ``flower-supernode`` (127.0.0.1, free
    ports; TLS and node authentication unless ``secure`` is off), submits the app with ``flwr
    run``, waits for ``status.json``, and stops every process it started — and their
    children — by PID, also on failure.

    Args:
        config, server_fn, out_dir, num_clients, tasks, client_data, round_timeout,
            connect_timeout, extra: as for :func:`run_on_simulation`.
        startup_timeout: seconds for the SuperLink to answer its health check and for
            ``flwr run`` to submit.
        run_timeout: seconds for the whole run once submitted.
        python_path: extra ``PYTHONPATH`` entries for the app processes (e.g. a test tree).
        poll_interval: SuperExec's task poll interval in seconds (Flower's default is 1 s).
        secure: TLS with certificates and SuperNode keys written to ``out_dir/certificates``
            and node authentication (the default); False runs ``--insecure``.
        certificates: existing TLS files instead of fresh ones (the server certificate must
            name 127.0.0.1); SuperNode keys are still written per run.

    Raises:
        ConfigError: bad ``certificates`` (missing file, wrong CA) or given with ``secure=False``.
        EngineError: A process did not start, a key was not registered, or the run failed.
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
    security, ports = _prepare_federation(out_dir, n, secure=secure, certificates=certificates)
    group = ProcessGroup(out_dir / "logs", base)
    t_start = time.time()
    try:
        timings = _start_federation(
            group, home=home, ports=ports, security=security, startup_timeout=startup_timeout
        )
        t_submit = time.time()
        run_id = _submit(app_dir, env=base, out_dir=out_dir, timeout=max(startup_timeout, 60.0))
        timings["submit"] = time.time() - t_submit
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
    argv = [_flwr(), "ls", FEDERATION, "--run-id", run_id, "--format", "json"]
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


__all__ = [
    "FEDERATION",
    "register_nodes",
    "run_on_deployment",
    "start_superlink",
    "start_supernodes",
]
