"""The Engine protocol on a Flower 1.42 ``Grid``: the same server code, real transport.

Design note
-----------
*A round on Flower.* The server algorithm (DistDD, FedAvg) stays written against
:class:`~distdd_nas.federation.engine.Engine`; its *configure* phase builds one
:class:`~distdd_nas.federation.message.Message` per selected client and its *aggregate* phase
consumes the replies. :meth:`FlowerEngine.run_round` is the *send* in between: each message is
converted to a Flower ``RecordDict`` (arrays → ``ArrayRecord`` under ``"arrays"``, scalars →
``ConfigRecord`` under ``"config"``), addressed to the client's Flower node with message type
``"<category>.<task>"`` (``train.local_train``, ``evaluate.evaluate``, ``query.<other task>``) and
``group_id`` = the round number, pushed through ``grid.push_messages`` and collected with
``grid.pull_messages``. The ClientApp (:mod:`distdd_nas.federation.flower.apps`) routes on the
task name and runs the very same client function as :class:`InProcessEngine`.

*Where bytes are counted.* At this boundary, in the server process, exactly as
:class:`InProcessEngine` does: one ``down`` row per message the SuperLink accepted and one ``up``
row per reply that carries content, ``kind`` = task name, ``bytes`` = ``Message.nbytes`` (the raw
array payload). Flower's ``ArrayRecord.count_bytes`` would add the ``.npy`` header and the key
lengths (~130 B per array); we keep the payload convention so that the ledger of a Flower run
equals the ledger of an in-process run of the same study, byte for byte.
The one-off partition handshake is control traffic without arrays and is not metered.

*Node ids → client ids.* Flower assigns random 64-bit node ids; our client id is the partition
id a SuperNode is started with (``--node-config "partition-id=i num-partitions=n"``; the
simulation runtime sets both itself). When the engine is created it waits until
``num_clients`` nodes are connected, sends every node a ``query.distdd_partition`` message, and
builds the map from the replies (duplicate, missing or out-of-range ids are errors).

*Failures.* A reply carrying an ``Error`` (the ClientApp raised, the node went away), a message
the SuperLink refused, or no reply within ``round_timeout`` seconds: the client is absent from
the returned replies and the event is logged — the Engine contract, same as a dropped client.

Flower is imported lazily, so this module imports without the ``flower`` extra.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from distdd_nas.errors import ConfigError, EngineError, MissingDependencyError
from distdd_nas.federation.ledger import Ledger
from distdd_nas.federation.message import Message, Scalar

if TYPE_CHECKING:
    from flwr.app import Message as FlwrMessage
    from flwr.app import RecordDict
    from flwr.serverapp import Grid

log = logging.getLogger(__name__)

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
#: Reserved task name of the handshake that maps Flower node ids to partition ids.
PARTITION_TASK = "distdd_partition"
#: Flower message category per task; every other task is a ``query``.
TASK_CATEGORIES: Mapping[str, str] = {"local_train": "train", "evaluate": "evaluate"}
_CATEGORIES = ("train", "evaluate", "query")
FLOWER_HINT = "install the flower extra: pip install -e .[flower]"


def require_flower() -> None:
    """Raise :class:`MissingDependencyError` with the install hint when flwr is missing."""
    try:
        import flwr  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(f"Flower (flwr) is not installed; {FLOWER_HINT}") from err


# --------------------------------------------------------------------------------------------
# Converters (pure; tested on their own)
# --------------------------------------------------------------------------------------------


def message_type_for(task: str) -> str:
    """Flower message type of a task: ``"<category>.<task>"``, category from TASK_CATEGORIES.

    Flower routes on the message type and requires the action to be a Python identifier.
    """
    if not task.isidentifier():
        raise EngineError(f"task name {task!r} is not a Python identifier; rename the task")
    return f"{TASK_CATEGORIES.get(task, 'query')}.{task}"


def task_from_message_type(message_type: str) -> str:
    """Inverse of :func:`message_type_for`."""
    category, sep, task = message_type.partition(".")
    if not sep or category not in _CATEGORIES or not task.isidentifier():
        raise EngineError(
            f"message type {message_type!r} is not '<train|evaluate|query>.<task>'; "
            "send it through FlowerEngine"
        )
    return task


def short_reason(reason: str | None, limit: int = 300) -> str:
    """The last meaningful line of a (remote) traceback, for one-line logs."""
    lines = [ln.strip() for ln in str(reason).splitlines() if ln.strip().strip("^~")]
    text = lines[-1] if lines else str(reason)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain_scalar(key: str, value: Any) -> Scalar:
    """A config value as the Python scalar ConfigRecord accepts (numpy scalars unwrapped)."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, bool | int | float | str):
        raise EngineError(
            f"config value {key!r} has type {type(value).__name__}; only int, float, str and "
            "bool cross the engine (put tensors into arrays)"
        )
    return value


def to_record_dict(message: Message) -> RecordDict:
    """Our :class:`Message` as a Flower ``RecordDict`` (bit-exact, dtype and shape preserved).

    Arrays are serialised by Flower with ``np.save(allow_pickle=False)``, so object arrays are
    refused here with a clear message instead of failing deep inside Flower.
    """
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    arrays: dict[str, Array] = {}
    for key, value in message.arrays.items():
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise EngineError(f"array {key!r} has dtype object; send numeric arrays only")
        arrays[key] = Array(arr)
    config = {key: _plain_scalar(key, value) for key, value in message.config.items()}
    return RecordDict(
        {
            ARRAYS_KEY: ArrayRecord(arrays),
            CONFIG_KEY: ConfigRecord(config),  # type: ignore[arg-type]
        }
    )


def from_record_dict(content: RecordDict) -> Message:
    """A Flower ``RecordDict`` made by :func:`to_record_dict` back into our :class:`Message`."""
    arrays: dict[str, np.ndarray] = {}
    config: dict[str, Scalar] = {}
    if ARRAYS_KEY in content:
        for key, array in content.array_records[ARRAYS_KEY].items():
            arrays[key] = array.numpy()
    if CONFIG_KEY in content:
        for key, value in content.config_records[CONFIG_KEY].items():
            config[key] = value  # type: ignore[assignment]
    return Message(arrays=arrays, config=config)


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTiming:
    """Wall time of one ``run_round`` (send → last reply), for overhead measurements."""

    round: int
    task: str
    sent: int
    replies: int
    seconds: float


class FlowerEngine:
    """Runs client tasks on Flower nodes through a ``Grid`` and meters every payload.

    Args:
        grid: the Grid handed to the ServerApp's main function.
        num_clients: number of clients (partitions) of the study; that many nodes must connect.
        ledger: ledger to append to (a new one by default).
        round_timeout: seconds to wait for replies in one round; None waits for all of them.
        connect_timeout: seconds to wait for the nodes to connect and answer the handshake.
        poll_interval: the longest pause between two pulls (pulls start at 10 ms, back off).
        known_tasks: when given, an unknown task raises before anything is sent (like
            :class:`InProcessEngine`); otherwise the ClientApp refuses it and every client is
            absent.
    """

    def __init__(
        self,
        *,
        grid: Grid,
        num_clients: int,
        ledger: Ledger | None = None,
        round_timeout: float | None = None,
        connect_timeout: float = 120.0,
        poll_interval: float = 0.2,
        known_tasks: Collection[str] | None = None,
    ) -> None:
        require_flower()
        if num_clients < 1:
            raise EngineError("an engine needs at least one client; check partition.num_clients")
        if round_timeout is not None and round_timeout <= 0:
            raise ConfigError(f"round_timeout {round_timeout} must be positive (or None)")
        self._grid = grid
        self._num_clients = int(num_clients)
        self._ledger = ledger if ledger is not None else Ledger()
        self._round_timeout = round_timeout
        self._poll_interval = max(0.01, float(poll_interval))
        self._known_tasks = frozenset(known_tasks) if known_tasks is not None else None
        self._closed = False
        self.timings: list[RoundTiming] = []
        start = time.perf_counter()
        self._node_of: dict[int, int] = self._discover(connect_timeout)
        self.discovery_seconds = time.perf_counter() - start
        log.info(
            "Flower nodes mapped to %d clients in %.2fs",
            len(self._node_of),
            self.discovery_seconds,
        )

    # -- protocol ----------------------------------------------------------------------------

    @property
    def num_clients(self) -> int:
        return self._num_clients

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def node_ids(self) -> dict[int, int]:
        """Client id → Flower node id (a copy)."""
        return dict(self._node_of)

    def run_round(
        self, task: str, messages: Mapping[int, Message], *, round: int
    ) -> dict[int, Message]:
        """Send one message per client, wait for the replies, meter both directions."""
        if self._closed:
            raise EngineError("this FlowerEngine is closed; create a new one")
        if task == PARTITION_TASK:
            raise EngineError(f"task name {task!r} is reserved for the engine's handshake")
        if self._known_tasks is not None and task not in self._known_tasks:
            known = ", ".join(sorted(self._known_tasks))
            raise EngineError(f"unknown client task {task!r}; registered tasks: {known}")
        for cid in messages:
            if not 0 <= cid < self._num_clients:
                raise EngineError(
                    f"client id {cid} does not exist (engine has {self.num_clients})"
                )
        start = time.perf_counter()
        mtype = message_type_for(task)
        ttl = self._ttl()
        outgoing: list[tuple[int, FlwrMessage]] = [
            (
                cid,
                self._flower_message(
                    to_record_dict(messages[cid]), cid=cid, mtype=mtype, round=round, ttl=ttl
                ),
            )
            for cid in sorted(messages)
        ]
        pending = self._push(outgoing)
        for cid in sorted(pending.values()):
            self._ledger.record(
                round=round, client=cid, direction="down", kind=task, nbytes=messages[cid].nbytes
            )
        raw = self._collect(pending, timeout=self._round_timeout, what=f"{task} round {round}")
        replies: dict[int, Message] = {}
        for cid in sorted(raw):
            reply = raw[cid]
            if reply.has_error():
                err = reply.error
                log.warning(
                    "client %d failed %s in round %d (error code %s): %s",
                    cid,
                    task,
                    round,
                    err.code,
                    short_reason(err.reason),
                )
                continue
            converted = from_record_dict(reply.content)
            self._ledger.record(
                round=round, client=cid, direction="up", kind=task, nbytes=converted.nbytes
            )
            replies[cid] = converted
        self.timings.append(
            RoundTiming(
                round=round,
                task=task,
                sent=len(pending),
                replies=len(replies),
                seconds=time.perf_counter() - start,
            )
        )
        return replies

    def close(self) -> None:
        """Stop accepting rounds (the Grid itself belongs to Flower and is closed by it)."""
        self._closed = True

    # -- internals ---------------------------------------------------------------------------

    def _ttl(self) -> float | None:
        if self._round_timeout is None:
            return None
        from flwr.app import DEFAULT_TTL

        return float(min(DEFAULT_TTL, max(self._round_timeout, 1.0)))

    def _flower_message(
        self,
        content: RecordDict,
        *,
        cid: int | None,
        mtype: str,
        round: int,
        ttl: float | None,
        node: int | None = None,
    ) -> FlwrMessage:
        from flwr.app import Message as FlwrMessage

        dst = node if node is not None else self._node_of[int(cid)]  # type: ignore[arg-type]
        return FlwrMessage(content, dst, mtype, ttl=ttl, group_id=str(round))

    def _push(self, outgoing: Iterable[tuple[int, FlwrMessage]]) -> dict[str, int]:
        """Push messages; return message id → client id for those the SuperLink accepted."""
        items = list(outgoing)
        if not items:
            return {}
        accepted = {mid for mid in self._grid.push_messages([m for _, m in items]) if mid}
        pending: dict[str, int] = {}
        for cid, msg in items:
            mid = msg.metadata.message_id
            if mid and mid in accepted:
                pending[mid] = cid
            else:
                log.warning("the SuperLink refused the message to client %d; it is skipped", cid)
        return pending

    def _collect(
        self, pending: Mapping[str, int], *, timeout: float | None, what: str
    ) -> dict[int, FlwrMessage]:
        """Pull replies until all arrived or ``timeout`` passed; key them by client id."""
        waiting = dict(pending)
        got: dict[int, FlwrMessage] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while waiting:
            for reply in self._grid.pull_messages(list(waiting)):
                cid = waiting.pop(reply.metadata.reply_to_message_id, None)
                if cid is None:
                    log.debug("ignoring a reply to an unknown message (%s)", what)
                    continue
                got[cid] = reply
            if not waiting:
                break
            if deadline is not None and time.monotonic() >= deadline:
                missing = sorted(waiting.values())
                log.warning(
                    "no reply from clients %s within %.1fs (%s); they are absent",
                    missing,
                    timeout,
                    what,
                )
                break
            time.sleep(pause)
            pause = min(self._poll_interval, pause * 1.5)
        return got

    def _discover(self, connect_timeout: float) -> dict[int, int]:
        """Wait for the nodes, ask each for its partition id, return client id → node id."""
        deadline = time.monotonic() + connect_timeout
        hint = (
            "start one SuperNode per client with --node-config "
            f"'partition-id=<i> num-partitions={self._num_clients}'"
        )
        while True:
            nodes = sorted(int(n) for n in self._grid.get_node_ids())
            if len(nodes) >= self._num_clients:
                break
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"only {len(nodes)} of {self._num_clients} Flower nodes connected within "
                    f"{connect_timeout:.0f}s; {hint}"
                )
            time.sleep(0.1)
        from flwr.app import ConfigRecord, RecordDict

        mtype = message_type_for(PARTITION_TASK)
        outgoing = [
            (
                node,
                self._flower_message(
                    RecordDict({CONFIG_KEY: ConfigRecord({})}),
                    cid=None,
                    mtype=mtype,
                    round=-1,
                    ttl=None,
                    node=node,
                ),
            )
            for node in nodes
        ]
        pending = self._push(outgoing)  # keyed by node id here
        remaining = max(1.0, deadline - time.monotonic())
        replies = self._collect(pending, timeout=remaining, what="partition handshake")
        node_of: dict[int, int] = {}
        for node, reply in sorted(replies.items()):
            if reply.has_error():
                raise EngineError(
                    f"Flower node {node} failed the partition handshake: "
                    f"{short_reason(reply.error.reason)}; check the ClientApp's log"
                )
            cfg = from_record_dict(reply.content).config
            if "partition-id" not in cfg:
                raise EngineError(
                    f"Flower node {node} has no partition-id in its node config; {hint}"
                )
            pid = int(cfg["partition-id"])
            if not 0 <= pid < self._num_clients:
                raise EngineError(
                    f"Flower node {node} reports partition-id {pid} but the study has "
                    f"{self._num_clients} clients; {hint}"
                )
            if pid in node_of:
                raise EngineError(
                    f"Flower nodes {node_of[pid]} and {node} both report partition-id {pid}; "
                    f"{hint}"
                )
            node_of[pid] = node
        missing = sorted(set(range(self._num_clients)) - set(node_of))
        if missing:
            raise EngineError(f"no Flower node answered for partitions {missing}; {hint}")
        return node_of
