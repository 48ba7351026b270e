"""The one channel between server and clients.

Server-side algorithms (DistDD, FedAvg, federated evaluation) never call client code directly: they
hand an :class:`Engine` one :class:`~distdd_nas.federation.message.Message` per selected client and
the name of a client task, and get the replies back. Every payload is metered into the engine's
:class:`~distdd_nas.federation.ledger.Ledger` on the way, so communication figures cannot be
forgotten or faked, and the same algorithm code runs in-process or on Flower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from distdd_nas.data import ImageDataset
from distdd_nas.errors import ConfigError, EngineError
from distdd_nas.federation.ledger import Ledger
from distdd_nas.federation.message import Message
from distdd_nas.seeding import numpy_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ClientData:
    """What one client holds: index views on one shared training set, never a copy.

    ``dataset`` carries the labels as the client sees them (after label noise, if any).
    ``holdout_indices`` is the client's local evaluation split (federated proxy scoring).
    """

    cid: int
    dataset: ImageDataset
    train_indices: np.ndarray
    holdout_indices: np.ndarray

    @property
    def num_train(self) -> int:
        return len(self.train_indices)

    def train_labels(self) -> np.ndarray:
        return self.dataset.labels[self.train_indices].numpy()


ClientTask = Callable[[ClientData, Message], Message]


class ClientDropped(RuntimeError):
    """Raised by a client task that sends no reply to this delivery (an injected failure):
    engines skip the client for the round instead of failing it."""


@runtime_checkable
class Engine(Protocol):
    """Runs a named client task on a set of clients, one message each, and meters the traffic.

    Contract (checked for the in-process and Flower engines by ``tests/federation/``):
    replies come back keyed by client id, in ascending id order; a client that fails or drops out
    is absent from the replies (never a partial reply); every delivered message is recorded in
    ``ledger`` as ``down`` and every reply as ``up`` with ``kind`` = the task name.
    """

    @property
    def num_clients(self) -> int: ...

    @property
    def ledger(self) -> Ledger: ...

    def run_round(
        self, task: str, messages: Mapping[int, Message], *, round: int
    ) -> dict[int, Message]: ...

    def close(self) -> None: ...


def select_clients(*, num_clients: int, fraction: float, seed: int, round: int) -> list[int]:
    """Seeded client sampling for one round (at least one client), sorted ids.

    The server owns this choice (Flower's *configure* phase); engines only deliver.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"client fraction {fraction} is out of range; use 0 < fraction <= 1")
    k = max(1, int(round_half_up(fraction * num_clients)))
    if k >= num_clients:
        return list(range(num_clients))
    rng = numpy_rng(seed, "select", round)
    return sorted(int(c) for c in rng.choice(num_clients, size=k, replace=False))


def round_half_up(x: float) -> int:
    """Round half up (Python's round() rounds half to even, which surprises in client counts)."""
    return int(np.floor(x + 0.5))


class InProcessEngine:
    """Clients are index views on one shared dataset, run sequentially in this process.

    Deterministic: the order of execution is ascending client id. A task that raises
    :class:`ClientDropped` (an injected failure, see
    :class:`~distdd_nas.federation.faults.Faults`) sends no reply, as a Flower client whose
    ClientApp raised; any other exception is a bug and propagates.
    """

    def __init__(
        self,
        *,
        clients: Sequence[ClientData],
        tasks: Mapping[str, ClientTask],
        ledger: Ledger | None = None,
    ) -> None:
        if not clients:
            raise EngineError("an engine needs at least one client; check partition.num_clients")
        self._clients = list(clients)
        self._tasks = dict(tasks)
        self._ledger = ledger if ledger is not None else Ledger()

    @property
    def num_clients(self) -> int:
        return len(self._clients)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def clients(self) -> Sequence[ClientData]:
        return self._clients

    def run_round(
        self, task: str, messages: Mapping[int, Message], *, round: int
    ) -> dict[int, Message]:
        """Deliver each message, run the task, collect and meter the replies."""
        fn = self._tasks.get(task)
        if fn is None:
            known = ", ".join(sorted(self._tasks))
            raise EngineError(f"unknown client task {task!r}; registered tasks: {known}")
        replies: dict[int, Message] = {}
        for cid in sorted(messages):
            if not 0 <= cid < len(self._clients):
                raise EngineError(
                    f"client id {cid} does not exist (engine has {self.num_clients})"
                )
            msg = messages[cid]
            self._ledger.record(
                round=round, client=cid, direction="down", kind=task, nbytes=msg.nbytes
            )
            try:
                reply = fn(self._clients[cid], msg)
            except ClientDropped:
                log.info("client %d dropped out of round %d (%s)", cid, round, task)
                continue
            self._ledger.record(
                round=round, client=cid, direction="up", kind=task, nbytes=reply.nbytes
            )
            replies[cid] = reply
        return replies

    def close(self) -> None:
        """Nothing to release in-process (kept for the protocol)."""
