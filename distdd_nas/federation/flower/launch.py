"""What both Flower runtimes share: the run config, the process environment, the run
directory, and reading the run back with its phase timings.

:mod:`.simulation` and :mod:`.deployment` each start Flower their own way; everything before
(:func:`prepare_run`: check the extra, make ``out_dir``, build the run config) and after
(:func:`read_result`, :func:`log_timings`) is the same and lives here, so the two runtimes
cannot drift apart. Flower is not imported: this module loads without the ``flower`` extra.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.flower.engine import require_flower
from distdd_nas.federation.flower.outputs import STATUS_FILE, FlowerRunResult, read_run_outputs
from distdd_nas.federation.flower.project import RunConfigValue

if TYPE_CHECKING:
    from distdd_nas.config import StudyConfig

log = logging.getLogger(__name__)

#: Environment every Flower process gets (see environment.md, "Flower 1.42").
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


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
    extra: Mapping[str, RunConfigValue] | None = None,
) -> dict[str, RunConfigValue]:
    """The Flower run config of a distdd-nas run (keys documented in ``flower.apps``)."""
    from distdd_nas.federation.flower.apps import DEFAULT_CLIENT_DATA, DEFAULT_TASKS

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
            raise ConfigError(
                "num_clients is missing and the config has no "
                "partition.num_clients; pass num_clients"
            ) from err
    if num_clients < 1:
        raise ConfigError(f"num_clients={num_clients}; a Flower run needs at least one client")
    rc: dict[str, RunConfigValue] = {
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


def flower_env(
    flwr_home: Path,
    *,
    base: Mapping[str, str] | None = None,
    python_path: Sequence[str | Path] = (),
) -> dict[str, str]:
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


def prepare_run(
    out_dir: Path, config: StudyConfig | Mapping[str, Any] | None, **run_config: Any
) -> tuple[Path, dict[str, RunConfigValue]]:
    """Check Flower is there, make ``out_dir`` (no stale status), build the run config."""
    require_flower()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATUS_FILE).unlink(missing_ok=True)
    return out_dir, build_run_config(config, out_dir=out_dir, **run_config)


def phase_timings(engine: Mapping[str, Any], *, t_start: float, t_end: float) -> dict[str, float]:
    """Seconds per phase of a run, from the runner's clock and the ServerApp's ``engine`` record.

    ``startup`` (call → engine ready), ``discovery`` (waiting for the nodes), ``rounds`` (engine
    ready → server function done), ``round_mean``, ``teardown`` (done → runner back), ``total``.
    """
    ready = float(engine.get("engine_ready_at", t_start))
    done = float(engine.get("finished_at", t_end))
    per_round = [float(r["seconds"]) for r in engine.get("rounds", [])]
    return {
        "startup": ready - t_start,
        "discovery": float(engine.get("discovery_seconds", 0.0)),
        "rounds": done - ready,
        "round_mean": float(np.mean(per_round)) if per_round else 0.0,
        "teardown": t_end - done,
        "total": t_end - t_start,
    }


def read_result(
    out_dir: Path,
    *,
    t_start: float,
    t_end: float,
    pids: tuple[int, ...],
    measured: Mapping[str, float] | None = None,
) -> FlowerRunResult:
    """Read the finished run in ``out_dir`` and add the runner's timings and process ids.

    ``measured`` holds runtime-specific timings (e.g. ``superlink_ready``), kept next to the
    :func:`phase_timings`.

    Raises:
        EngineError: The run wrote no status, or the server function failed.
    """
    out = read_run_outputs(out_dir)
    timings = {**phase_timings(out.engine, t_start=t_start, t_end=t_end), **(measured or {})}
    return dataclasses.replace(out, timings=timings, pids=pids)


def log_timings(runtime: str, timings: Mapping[str, float]) -> None:
    """One INFO line with a run's start-up, rounds and total seconds."""
    log.info(
        "%s: start-up %.1fs, rounds %.1fs, total %.1fs",
        runtime,
        timings["startup"],
        timings["rounds"],
        timings["total"],
    )


__all__ = [
    "FLOWER_ENV",
    "build_run_config",
    "flower_env",
    "log_timings",
    "phase_timings",
    "prepare_run",
    "read_result",
]
