"""A toy federation for the Flower tests, and an in-process Grid to drive the apps with.

The toy task registry, client data and server functions are also imported by the Flower app
processes (Ray actors, ``flwr-serverapp``/``flwr-clientapp``) by their ``"module:function"``
names, so they live in this plain module (not a test module) at module level.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distdd_nas.data import ImageDataset
from distdd_nas.federation import ClientData, InProcessEngine, Message
from distdd_nas.federation.engine import Engine

REPO = Path(__file__).resolve().parents[3]
HERE = "tests.federation.flower.toy"
TOY_TASKS = f"{HERE}:toy_tasks"
TOY_DATA = f"{HERE}:toy_client"
TOY_SERVER = f"{HERE}:toy_server"


# --------------------------------------------------------------------------------------------
# Toy federation (also used inside the Flower processes)
# --------------------------------------------------------------------------------------------


def toy_client(study: object, partition_id: int, num_partitions: int) -> ClientData:
    """Client ``partition_id`` of a tiny deterministic dataset (every n-th example)."""
    del study
    n = 30
    dataset = ImageDataset(
        name="toy",
        images=torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2),
        labels=torch.arange(n, dtype=torch.long) % 3,
        classes=("a", "b", "c"),
        mean=(0.0,),
        std=(1.0,),
    )
    idx = np.arange(partition_id, n, max(1, num_partitions), dtype=np.int64)
    return ClientData(
        cid=partition_id, dataset=dataset, train_indices=idx[1:], holdout_indices=idx[:1]
    )


def toy_sum(client: ClientData, msg: Message) -> Message:
    """Reply transformed arrays of several dtypes plus the echoed config and client facts."""
    total = sum(float(np.asarray(a, dtype=np.float64).sum()) for a in msg.arrays.values())
    arrays = {
        "sum": np.array([total + client.cid], dtype=np.float64),
        "w2": (msg.arrays["w"] * 2).astype(np.float32),
        "idx": msg.arrays["idx"] + client.cid,
        "mask": ~msg.arrays["mask"],
        "labels": client.train_labels().astype(np.int16),
    }
    return Message(arrays=arrays, config={**msg.config, "cid": client.cid, "n": client.num_train})


def toy_fail(client: ClientData, msg: Message) -> Message:
    """Fails on client 1 (a crashing client), echoes elsewhere."""
    if client.cid == 1:
        raise RuntimeError("toy failure on client 1")
    return Message(arrays=dict(msg.arrays), config={"ok": True})


def toy_tasks(study: object = None) -> dict[str, Any]:
    del study
    return {"toy_sum": toy_sum, "toy_fail": toy_fail}


def toy_messages(round: int, num_clients: int) -> dict[int, Message]:
    """Deterministic per-client payloads (float32, int64, bool; a non-trivial config)."""
    out: dict[int, Message] = {}
    for cid in range(num_clients):
        rng = np.random.default_rng(1000 * round + cid)
        out[cid] = Message(
            arrays={
                "w": rng.standard_normal((3, 4)).astype(np.float32),
                "idx": rng.integers(0, 100, size=5).astype(np.int64),
                "mask": rng.random((2, 2)) > 0.5,
            },
            config={
                "round": round,
                "lr": 0.1 * (round + 1) / 3,
                "tag": f"r{round}",
                "flag": round % 2 == 0,
            },
        )
    return out


def drive(engine: Engine, rounds: int = 2) -> dict[str, Any]:
    """The toy server loop: rounds of toy_sum; replies flattened for comparison."""
    out: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for r in range(rounds):
        replies = engine.run_round("toy_sum", toy_messages(r, engine.num_clients), round=r)
        out[f"ids_r{r}"] = sorted(replies)
        for cid, reply in replies.items():
            configs[f"r{r}_c{cid}"] = dict(reply.config)
            for key, arr in reply.arrays.items():
                out[f"r{r}_c{cid}_{key}"] = arr
    out["configs"] = configs
    return out


def toy_server(run: Any) -> dict[str, Any]:
    """Server function for the Flower tests: the toy loop, then optionally a failing round."""
    out = drive(run.engine, rounds=int(run.run_config.get("toy-rounds", 2)))
    if run.run_config.get("toy-fail", False):
        ones = Message(arrays={"x": np.ones(4, np.float32)})
        msgs = dict.fromkeys(range(run.engine.num_clients), ones)
        out["failed_round_ids"] = sorted(run.engine.run_round("toy_fail", msgs, round=99))
    out["pid"] = os.getpid()
    return out


def toy_server_raises(run: Any) -> dict[str, Any]:
    run.engine.run_round("toy_sum", toy_messages(0, run.engine.num_clients), round=0)
    raise ValueError("the toy server function broke")


def inprocess_reference(
    num_clients: int, rounds: int = 2
) -> tuple[dict[str, Any], InProcessEngine]:
    clients = [toy_client(None, c, num_clients) for c in range(num_clients)]
    engine = InProcessEngine(clients=clients, tasks=toy_tasks())
    return drive(engine, rounds=rounds), engine


def ledger_rows(ledger: Any, kind: str) -> list[tuple[int, int, str, str, int]]:
    return sorted(
        (r.round, r.client, r.direction, r.kind, r.bytes) for r in ledger.rows if r.kind == kind
    )


def assert_same_replies(result: Any, reference: dict[str, Any]) -> None:
    """Flower run outputs (JSON + NPZ) equal the in-process replies bit for bit."""
    ref_arrays = {k: v for k, v in reference.items() if isinstance(v, np.ndarray)}
    assert set(result.arrays) == set(ref_arrays)
    for key, ref in ref_arrays.items():
        got = result.arrays[key]
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        assert got.tobytes() == ref.tobytes(), key
    ref_configs = json.loads(json.dumps(reference["configs"]))
    assert result.result["configs"] == ref_configs
    for key in (k for k in reference if k.startswith("ids_")):
        assert result.result[key] == reference[key]


def toy_rc(num_clients: int) -> dict[str, Any]:
    return {
        "tasks": TOY_TASKS,
        "client-data": TOY_DATA,
        "study-config": "",
        "num-clients": num_clients,
    }


# --------------------------------------------------------------------------------------------
# An in-process Grid (no runtime): the ClientApp handler answers every pushed message
# --------------------------------------------------------------------------------------------


class FakeGrid:
    """In-process Grid: runs the distdd-nas ClientApp handler for each pushed message.

    ``partitions`` maps node id → partition id; ``silent`` node ids never answer.
    """

    def __init__(
        self,
        partitions: Mapping[int, int],
        *,
        run_config: Mapping[str, Any],
        silent: Iterable[int] = (),
        refuse: Iterable[int] = (),
    ) -> None:
        self.partitions = dict(partitions)
        self.run_config = dict(run_config)
        self.silent = set(silent)
        self.refuse = set(refuse)
        self.replies: dict[str, Any] = {}
        self.pushed: list[Any] = []

    def get_node_ids(self) -> list[int]:
        return list(self.partitions)

    def push_messages(self, messages: Iterable[Any]) -> list[str | None]:
        from flwr.app import Context, Error, RecordDict
        from flwr.app import Message as FlwrMessage

        from distdd_nas.federation.flower.apps import handle_client_message

        ids: list[str | None] = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node in self.refuse:
                ids.append(None)
                continue
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid  # what Flower's grids do on push
            ids.append(mid)
            self.pushed.append(msg)
            if node in self.silent:
                continue
            ctx = Context(
                run_id=1,
                node_id=node,
                state=RecordDict(),
                run_config={},
                node_config={
                    "partition-id": self.partitions[node],
                    "num-partitions": len(self.partitions),
                },
            )
            try:
                self.replies[mid] = handle_client_message(msg, ctx, self.run_config)
            except Exception as err:  # what the runtimes turn exceptions into
                self.replies[mid] = FlwrMessage(Error(code=1, reason=str(err)), reply_to=msg)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]
