"""The Flower app of distdd-nas: one ClientApp and one ServerApp for every study and task.

*ClientApp.* Each message names its task in the message type (``query.class_gradients``,
``train.local_train`` …; see :mod:`distdd_nas.federation.flower.engine`). The handler rebuilds
the client's :class:`~distdd_nas.federation.engine.ClientData` from the node's ``partition-id``
and the study configuration carried in the run config (through the ``client-data`` factory),
and calls the same client function as :class:`~distdd_nas.federation.engine.InProcessEngine`
from the same task registry. The client data is cached per process, so a simulation actor
loads its data once. (On the deployment runtime Flower 1.42 starts a fresh ``flwr-clientapp``
process per message, so there the data is rebuilt per message; that start-up is what dominates
a deployment round.)

*ServerApp.* Its main wraps the Grid in a :class:`FlowerEngine`, calls the server function named
by ``server-fn`` (``"module:function"``) with a :class:`ServerRun`, and writes what it returns,
the ledger and the engine's timings to ``out-dir`` (JSON, NPZ, CSV; no pickles), ``status.json``
last.

*Run config* (``[tool.flwr.app.config]`` on the deployment runtime; bound into the app objects
on the simulation runtime, whose Python API has no run config). Values are Flower scalars:

``server-fn``        ``"module:function"``, called as ``fn(run: ServerRun) -> Mapping | None``
``out-dir``          where the server writes its outputs
``num-clients``      number of partitions (one Flower node each)
``study-config``     JSON of ``StudyConfig.to_dict()`` ("" when the tasks need no study)
``tasks``            ``"module:function"`` called as ``fn(study)`` → ``dict[str, ClientTask]``
``client-data``      ``"module:function"`` called as ``fn(study, partition_id, num_partitions)``
``round-timeout``    seconds per round, 0 = wait for every reply
``connect-timeout``  seconds to wait for the nodes at start

The transport knows no algorithm: server functions, task registries and client-data factories
are named by ``"module:function"`` strings and resolved at run time (the defaults name
:func:`distdd_nas.study.default_tasks` and :func:`distdd_nas.study.flower_client`). This module
does not import the runtimes (:mod:`distdd_nas.federation.flower.runtime`), which import it.

Importing this module needs the ``flower`` extra.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distdd_nas.config import StudyConfig, from_dict
from distdd_nas.errors import ConfigError, EngineError, MissingDependencyError
from distdd_nas.federation.engine import ClientData, ClientTask, Engine
from distdd_nas.federation.flower.engine import (
    FLOWER_HINT,
    PARTITION_TASK,
    FlowerEngine,
    from_record_dict,
    task_from_message_type,
    to_record_dict,
)
from distdd_nas.federation.flower.outputs import write_run_outputs

try:
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.app import Message as FlwrMessage
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(f"Flower (flwr) is not installed; {FLOWER_HINT}") from _err

log = logging.getLogger(__name__)

RC_SERVER_FN = "server-fn"
RC_OUT_DIR = "out-dir"
RC_NUM_CLIENTS = "num-clients"
RC_STUDY = "study-config"
RC_TASKS = "tasks"
RC_CLIENT_DATA = "client-data"
RC_ROUND_TIMEOUT = "round-timeout"
RC_CONNECT_TIMEOUT = "connect-timeout"
#: Default task registry and client-data factory: algorithm code, named, never imported here.
DEFAULT_TASKS = "distdd_nas.study:default_tasks"
DEFAULT_CLIENT_DATA = "distdd_nas.study:flower_client"
CLIENT_APP_REF = "distdd_nas.federation.flower.apps:client_app"
SERVER_APP_REF = "distdd_nas.federation.flower.apps:server_app"

RunConfig = Mapping[str, Any]


@dataclass(frozen=True)
class ServerRun:
    """What a server function receives inside the ServerApp.

    Attributes:
        engine: the metered channel to the clients (a :class:`FlowerEngine`).
        study: the study configuration, or None when the run carries none.
        run_config: the whole Flower run config (extra keys pass through).
        out_dir: the run's output directory (the function may write its own files there).
    """

    engine: Engine
    study: StudyConfig | None
    run_config: Mapping[str, Any]
    out_dir: Path


ServerFn = Callable[[ServerRun], Mapping[str, Any] | None]


# --------------------------------------------------------------------------------------------
# Resolution and caches (one per process)
# --------------------------------------------------------------------------------------------


def resolve(spec: str) -> Any:
    """The object named by ``"package.module:attribute"`` (dotted attributes allowed)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r} is not 'module:attribute'; e.g. 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"cannot import {module_name!r} for {spec!r}: {err}; check the name "
            "and that the package is installed where the app runs"
        ) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ConfigError(
                f"{module_name!r} has no attribute {attr!r}; check {spec!r}"
            ) from err
    return obj


_STUDIES: dict[str, StudyConfig] = {}
_REGISTRIES: dict[tuple[str, str], dict[str, ClientTask]] = {}
_CLIENTS: dict[tuple[str, str, int, int], ClientData] = {}


def load_study(run_config: RunConfig) -> StudyConfig | None:
    """The StudyConfig carried as JSON in the run config (parsed once per process), or None."""
    text = str(run_config.get(RC_STUDY, "") or "")
    if not text:
        return None
    if text not in _STUDIES:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"run config {RC_STUDY!r} is not valid JSON: {err}") from err
        _STUDIES[text] = from_dict(data, source=f"run config {RC_STUDY!r}")
    return _STUDIES[text]


def task_registry(spec: str, run_config: RunConfig) -> dict[str, ClientTask]:
    """The task registry named by ``spec``, built once per process and study: the factory is
    called with the run's study config (None when the run carries none), so a study can shape
    its tasks (e.g. inject the faults it simulates)."""
    key = (spec, str(run_config.get(RC_STUDY, "")))
    if key not in _REGISTRIES:
        factory = resolve(spec)
        tasks = factory(load_study(run_config)) if callable(factory) else factory
        if not isinstance(tasks, Mapping):
            raise ConfigError(f"{spec!r} must return a mapping task name -> client function")
        _REGISTRIES[key] = dict(tasks)
    return _REGISTRIES[key]


def _node_partition(node_config: Mapping[str, Any]) -> tuple[int, int]:
    if "partition-id" not in node_config:
        raise EngineError(
            "this SuperNode has no partition-id; start it with --node-config "
            "'partition-id=<i> num-partitions=<n>'"
        )
    pid = int(node_config["partition-id"])
    num = int(node_config.get("num-partitions", -1))
    return pid, num


def client_data_for(run_config: RunConfig, node_config: Mapping[str, Any]) -> ClientData:
    """This node's ClientData, built once per process and cached."""
    pid, num = _node_partition(node_config)
    spec = str(run_config.get(RC_CLIENT_DATA, DEFAULT_CLIENT_DATA) or DEFAULT_CLIENT_DATA)
    key = (spec, str(run_config.get(RC_STUDY, "")), pid, num)
    if key not in _CLIENTS:
        factory = resolve(spec)
        _CLIENTS[key] = factory(load_study(run_config), pid, num)
    return _CLIENTS[key]


# --------------------------------------------------------------------------------------------
# ClientApp
# --------------------------------------------------------------------------------------------


def handle_client_message(
    message: FlwrMessage, context: Context, run_config: RunConfig | None = None
) -> FlwrMessage:
    """Run the task named by the message type on this node's client; reply with its Message.

    Exceptions propagate: Flower turns them into an error reply, which the engine treats as a
    dropped client.
    """
    rc = run_config if run_config is not None else context.run_config
    task = task_from_message_type(message.metadata.message_type)
    if task == PARTITION_TASK:
        pid, num = _node_partition(context.node_config)
        info = ConfigRecord(
            {
                "partition-id": pid,
                "num-partitions": num,
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
        )
        return FlwrMessage(RecordDict({"config": info}), reply_to=message)
    tasks = task_registry(str(rc.get(RC_TASKS, DEFAULT_TASKS) or DEFAULT_TASKS), rc)
    fn = tasks.get(task)
    if fn is None:
        raise EngineError(
            f"unknown client task {task!r}; registered tasks: {', '.join(sorted(tasks))}"
        )
    client = client_data_for(rc, context.node_config)
    reply = fn(client, from_record_dict(message.content))
    return FlwrMessage(to_record_dict(reply), reply_to=message)


class DistddClientApp(ClientApp):
    """A ClientApp that routes every ``<category>.<task>`` message to the task registry.

    Flower's decorators register a fixed set of actions when the app is imported; our task set
    comes from the run config, so the app dispatches itself. ``run_config`` binds the config
    for the simulation runtime; None reads it from the Flower Context (deployment).
    """

    def __init__(self, run_config: RunConfig | None = None) -> None:
        super().__init__()
        self._bound = dict(run_config) if run_config is not None else None

    def __call__(self, message: FlwrMessage, context: Context) -> FlwrMessage:
        return handle_client_message(message, context, self._bound)


def make_client_app(run_config: RunConfig | None = None) -> ClientApp:
    """The distdd-nas ClientApp (run config bound when given, else read from the Context)."""
    return DistddClientApp(run_config)


# --------------------------------------------------------------------------------------------
# ServerApp
# --------------------------------------------------------------------------------------------


def _float_or_none(value: Any) -> float | None:
    number = float(value or 0)
    return number if number > 0 else None


def server_main(grid: Grid, context: Context, run_config: RunConfig | None = None) -> None:
    """Build the engine on ``grid``, run the server function, write outputs (status last)."""
    rc = dict(run_config if run_config is not None else context.run_config)
    info: dict[str, Any] = {"server_started_at": time.time(), "server_pid": os.getpid()}
    if RC_OUT_DIR not in rc or RC_SERVER_FN not in rc:
        raise ConfigError(f"the run config needs {RC_OUT_DIR!r} and {RC_SERVER_FN!r}")
    out_dir = Path(str(rc[RC_OUT_DIR]))
    engine: FlowerEngine | None = None
    try:
        fn: ServerFn = resolve(str(rc[RC_SERVER_FN]))
        study = load_study(rc)
        tasks = task_registry(str(rc.get(RC_TASKS, DEFAULT_TASKS) or DEFAULT_TASKS), rc)
        engine = FlowerEngine(
            grid=grid,
            num_clients=int(rc[RC_NUM_CLIENTS]),
            round_timeout=_float_or_none(rc.get(RC_ROUND_TIMEOUT)),
            connect_timeout=_float_or_none(rc.get(RC_CONNECT_TIMEOUT)) or 120.0,
            known_tasks=tasks,
        )
        info["engine_ready_at"] = time.time()
        result = fn(ServerRun(engine=engine, study=study, run_config=rc, out_dir=out_dir))
        info["finished_at"] = time.time()
        write_run_outputs(out_dir, result=result, engine=engine, info=info)
    except BaseException as err:
        info["finished_at"] = time.time()
        info["error"] = f"{type(err).__name__}: {err}"
        info["traceback"] = traceback.format_exc()
        write_run_outputs(out_dir, result=None, engine=engine, info=info)
        raise
    finally:
        if engine is not None:
            engine.close()


def make_server_app(run_config: RunConfig | None = None) -> ServerApp:
    """The distdd-nas ServerApp (run config bound when given, else read from the Context)."""
    app = ServerApp()
    bound = dict(run_config) if run_config is not None else None

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        server_main(grid, context, bound)

    return app


#: Components referenced by the deployment app's pyproject (run config from the Context).
client_app = make_client_app()
server_app = make_server_app()
