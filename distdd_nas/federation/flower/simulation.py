"""Run a server function on Flower's simulation runtime: ``flwr.simulation.run_simulation`` in
this process, the ServerApp in a thread, the ClientApps in Ray actors (one CPU each).

The simulation runs inside this process, so its environment (:data:`.launch.FLOWER_ENV`, a
``FLWR_HOME`` inside ``out_dir``) and Flower's log level are set only while it runs and then
restored. Ray's actor processes outlive Flower's shutdown as orphans for a while; every process
the run started is stopped by PID before this returns
(:class:`~distdd_nas.processes.ChildWatcher`). Flower is imported lazily: this module imports
without the ``flower`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distdd_nas.errors import EngineError
from distdd_nas.federation.flower.launch import (
    FLOWER_ENV,
    flower_env,
    log_timings,
    prepare_run,
    read_result,
)
from distdd_nas.federation.flower.outputs import FlowerRunResult, read_status
from distdd_nas.federation.flower.project import RunConfigValue
from distdd_nas.processes import ChildWatcher

if TYPE_CHECKING:
    from flwr.app import ConfigRecordValues

    from distdd_nas.config import StudyConfig

    #: ``run_simulation``'s ``backend_config`` (flwr's ``BackendConfig``, not exported).
    BackendConfig = dict[str, dict[str, ConfigRecordValues]]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _simulation_process(
    env: Mapping[str, str],
    *,
    also_restore: Sequence[str] = (),
    flower_log_level: int = logging.ERROR,
) -> Iterator[None]:
    """Set ``env`` in this process and Flower's log level while a simulation runs; restore."""
    saved = {k: os.environ.get(k) for k in set(env) | set(also_restore)}
    flwr_log = logging.getLogger("flwr")
    old_level = flwr_log.level
    os.environ.update(env)
    flwr_log.setLevel(flower_log_level)
    try:
        yield
    finally:
        flwr_log.setLevel(old_level)
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _simulation_env(out_dir: Path) -> dict[str, str]:
    """The variables set in this process during the run: Flower's, ``FLWR_HOME``, and
    ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0`` (Ray's announced default, which also silences the
    FutureWarning Ray prints at start-up otherwise)."""
    env = {
        k: v
        for k, v in flower_env(out_dir / "flwr-home").items()
        if k in FLOWER_ENV or k == "FLWR_HOME"
    }
    env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    return env


def _backend_config(num_cpus: int) -> BackendConfig:
    """Ray with ``num_cpus`` CPUs, no GPU and quiet logs; one CPU per ClientApp actor."""
    return {
        "init_args": {
            "num_cpus": max(1, num_cpus),
            "num_gpus": 0,
            "logging_level": "ERROR",
            "log_to_driver": False,
        },
        "client_resources": {"num_cpus": 1, "num_gpus": 0},
    }


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
    extra: Mapping[str, RunConfigValue] | None = None,
    flower_log_level: int = logging.ERROR,
) -> FlowerRunResult:
    """Run ``server_fn`` on Flower's simulation runtime (Ray) and return its outputs.

    Args:
        config: the study (``StudyConfig`` or its ``to_dict()``), or None for toy tasks.
        server_fn: ``"module:function"`` taking a :class:`~.apps.ServerRun`.
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
    from flwr.simulation import run_simulation

    from distdd_nas.federation.flower.apps import make_client_app, make_server_app

    env = _simulation_env(out_dir)
    backend = _backend_config(num_cpus)
    watcher = ChildWatcher()
    t_start = time.time()
    try:
        with (
            watcher,
            _simulation_process(
                env, also_restore=("PYTHONPATH",), flower_log_level=flower_log_level
            ),
        ):
            run_simulation(
                server_app=make_server_app(rc),
                client_app=make_client_app(rc),
                num_supernodes=int(rc["num-clients"]),
                backend_config=backend,
            )
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
    result = read_result(out_dir, t_start=t_start, t_end=t_end, pids=tuple(watcher.pids))
    log_timings("simulation", result.timings)
    return result


__all__ = ["run_on_simulation"]
