"""FlowerEngine: converters, the engine on a fake Grid, and both Flower runtimes vs in-process.

The toy task registry and client data below are also imported by the Flower app processes
(Ray actors, ``flwr-serverapp``/``flwr-clientapp``), so they live at module level.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distdd_nas.data import ImageDataset
from distdd_nas.errors import EngineError
from distdd_nas.federation import ClientData, InProcessEngine, Message
from distdd_nas.federation.engine import Engine

pytestmark = pytest.mark.flower

REPO = Path(__file__).resolve().parents[2]
HERE = "tests.federation.test_flower_engine"
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
    return ClientData(cid=partition_id, dataset=dataset, train_indices=idx[1:],
                      holdout_indices=idx[:1])


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


def toy_tasks() -> dict[str, Any]:
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
            config={"round": round, "lr": 0.1 * (round + 1) / 3, "tag": f"r{round}",
                    "flag": round % 2 == 0},
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


def inprocess_reference(num_clients: int, rounds: int = 2
                        ) -> tuple[dict[str, Any], InProcessEngine]:
    clients = [toy_client(None, c, num_clients) for c in range(num_clients)]
    engine = InProcessEngine(clients=clients, tasks=toy_tasks())
    return drive(engine, rounds=rounds), engine


def ledger_rows(ledger: Any, kind: str) -> list[tuple[int, int, str, str, int]]:
    return sorted((r.round, r.client, r.direction, r.kind, r.bytes) for r in ledger.rows
                  if r.kind == kind)


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


def flower_processes(out_dir: Path) -> list[int]:
    """PIDs of live processes whose FLWR_HOME lies in ``out_dir`` (i.e. started for this run)."""
    import psutil

    found: list[int] = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            home = proc.environ().get("FLWR_HOME", "")
        except (psutil.Error, OSError):
            continue
        if home.startswith(str(out_dir)):
            found.append(proc.pid)
    return found


def assert_stopped(pids: Iterable[int], out_dir: Path) -> None:
    from distdd_nas.federation.flower_run import pid_alive

    alive = [p for p in pids if pid_alive(p)]
    assert not alive, f"processes still running: {alive}"
    assert not flower_processes(out_dir), "a Flower process of this run is still running"


# --------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------

flwr = pytest.importorskip("flwr")
from distdd_nas.federation.flower_engine import (  # noqa: E402
    PARTITION_TASK,
    FlowerEngine,
    from_record_dict,
    message_type_for,
    task_from_message_type,
    to_record_dict,
)


def _wire(content: Any) -> Any:
    """Serialise a RecordDict to Flower's object bytes and back (what the transports do)."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(content).items()}
    return inflate_object_from_contents(content.object_id, contents)


ARRAYS = {
    "f32": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "f64": np.array([np.pi, -0.0, np.inf, np.nan, 5e-324]),
    "f16": np.arange(6, dtype=np.float16),
    "i8": np.array([-128, 0, 127], dtype=np.int8),
    "i64": np.array([[2**62, -(2**62)]], dtype=np.int64),
    "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "bool": np.array([[True, False], [False, True]]),
    "c64": np.array([1 + 2j, -3j], dtype=np.complex64),
    "scalar": np.array(3.5, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "strided": np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2],
    "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    "bigendian": np.arange(4, dtype=">f4"),
}
CONFIG = {"i": 7, "neg": -(2**40), "f": 0.1, "tiny": 5e-324, "s": "héllo", "t": True,
          "b": False, "np_f": np.float32(0.25), "np_i": np.int64(9)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("through_wire", [False, True], ids=["records", "wire"])
def test_converters_round_trip_bit_exact(through_wire: bool) -> None:
    msg = Message(arrays=ARRAYS, config=CONFIG)
    content = to_record_dict(msg)
    back = from_record_dict(_wire(content) if through_wire else content)
    assert list(back.arrays) == list(ARRAYS)
    for key, ref in ARRAYS.items():
        got = back.arrays[key]
        assert got.dtype == ref.dtype, key
        assert got.shape == ref.shape, key
        assert got.tobytes() == np.ascontiguousarray(ref).tobytes(), key
    assert back.nbytes == msg.nbytes
    expected = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in CONFIG.items()}
    assert dict(back.config) == expected
    for key, value in back.config.items():
        assert type(value) is type(expected[key]), key  # bool stays bool, int stays int


@pytest.mark.timeout(60)
def test_converters_refuse_what_cannot_cross() -> None:
    with pytest.raises(EngineError, match="dtype object"):
        to_record_dict(Message(arrays={"o": np.array([object()], dtype=object)}))
    with pytest.raises(EngineError, match="only int, float, str and bool"):
        to_record_dict(Message(config={"x": [1, 2]}))  # type: ignore[dict-item]
    assert from_record_dict(to_record_dict(Message())) == Message()


@pytest.mark.timeout(60)
def test_message_types() -> None:
    assert message_type_for("local_train") == "train.local_train"
    assert message_type_for("evaluate") == "evaluate.evaluate"
    assert message_type_for("class_gradients") == "query.class_gradients"
    for task in ("local_train", "evaluate", "class_stats", PARTITION_TASK):
        assert task_from_message_type(message_type_for(task)) == task
    with pytest.raises(EngineError, match="identifier"):
        message_type_for("not-a-name")
    with pytest.raises(EngineError):
        task_from_message_type("train")


# --------------------------------------------------------------------------------------------
# The engine on a fake Grid (no runtime): mapping, metering, failures
# --------------------------------------------------------------------------------------------


class FakeGrid:
    """In-process Grid: runs the distdd-nas ClientApp handler for each pushed message.

    ``partitions`` maps node id → partition id; ``silent`` node ids never answer.
    """

    def __init__(self, partitions: Mapping[int, int], *, run_config: Mapping[str, Any],
                 silent: Iterable[int] = (), refuse: Iterable[int] = ()) -> None:
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

        from distdd_nas.federation.flower_app import handle_client_message

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
            ctx = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                          node_config={"partition-id": self.partitions[node],
                                       "num-partitions": len(self.partitions)})
            try:
                self.replies[mid] = handle_client_message(msg, ctx, self.run_config)
            except Exception as err:  # what the runtimes turn exceptions into
                self.replies[mid] = FlwrMessage(Error(code=1, reason=str(err)), reply_to=msg)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's Message constructor needs the process's task identity (set by the runtimes)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _toy_rc(num_clients: int) -> dict[str, Any]:
    return {"tasks": TOY_TASKS, "client-data": TOY_DATA, "study-config": "",
            "num-clients": num_clients}


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("task_identity")
def test_engine_on_fake_grid_matches_inprocess() -> None:
    nodes = {9001: 2, 42: 0, 77: 1}  # node ids unrelated to partition ids
    grid = FakeGrid(nodes, run_config=_toy_rc(3))
    engine = FlowerEngine(grid=grid, num_clients=3, known_tasks=toy_tasks())  # type: ignore[arg-type]
    assert engine.node_ids == {0: 42, 1: 77, 2: 9001}
    got = drive(engine)
    ref, ref_engine = inprocess_reference(3)
    for key, value in ref.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype and got[key].tobytes() == value.tobytes()
        else:
            assert got[key] == value
    assert ledger_rows(engine.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert engine.ledger.bytes_up == ref_engine.ledger.bytes_up > 0
    assert engine.ledger.bytes_down == ref_engine.ledger.bytes_down > 0
    assert [t.round for t in engine.timings] == [0, 1]
    assert all(m.metadata.group_id in {"-1", "0", "1"} for m in grid.pushed)
    with pytest.raises(EngineError, match="unknown client task"):
        engine.run_round("nope", {0: Message()}, round=3)
    with pytest.raises(EngineError, match="does not exist"):
        engine.run_round("toy_sum", {3: Message()}, round=3)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("task_identity")
def test_engine_failures_make_clients_absent() -> None:
    grid = FakeGrid({10: 0, 11: 1, 12: 2}, run_config=_toy_rc(3))
    engine = FlowerEngine(grid=grid, num_clients=3, round_timeout=0.3)  # type: ignore[arg-type]
    msgs = {c: Message(arrays={"x": np.ones(4, np.float32)}) for c in range(3)}
    # A client that raises: absent; its message still went down, no reply came up.
    assert sorted(engine.run_round("toy_fail", msgs, round=0)) == [0, 2]
    rows = ledger_rows(engine.ledger, "toy_fail")
    assert [(c, d) for _, c, d, _, _ in rows] == [(0, "down"), (0, "up"), (1, "down"),
                                                  (2, "down"), (2, "up")]
    # Unknown task without known_tasks: every client refuses it -> nobody answers.
    assert engine.run_round("nope", msgs, round=1) == {}
    # A node that never answers (timeout) and one the SuperLink refuses (never sent).
    grid.silent, grid.refuse = {11}, {12}
    replies = engine.run_round("toy_fail", {0: msgs[0], 1: msgs[1], 2: msgs[2]}, round=2)
    assert sorted(replies) == [0]
    rows = ledger_rows(engine.ledger, "toy_fail")
    down = [c for rnd, c, d, _, _ in rows if rnd == 2 and d == "down"]
    assert down == [0, 1]
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.run_round("toy_fail", msgs, round=3)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("task_identity")
def test_server_main_writes_outputs_and_errors(tmp_path: Path) -> None:
    """The ServerApp's main on a fake Grid: outputs round-trip; a failure is recorded, raised."""
    from flwr.app import Context, RecordDict

    from distdd_nas.federation.flower_app import server_main
    from distdd_nas.federation.flower_run import build_run_config, read_run_outputs

    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    rc = build_run_config(None, server_fn=TOY_SERVER, num_clients=3, out_dir=tmp_path / "ok",
                          tasks=TOY_TASKS, client_data=TOY_DATA, extra={"toy-rounds": 2})
    server_main(FakeGrid({5: 1, 6: 0, 7: 2}, run_config=rc), ctx, rc)  # type: ignore[arg-type]
    result = read_run_outputs(tmp_path / "ok")
    ref, ref_engine = inprocess_reference(3)
    assert_same_replies(result, ref)
    assert ledger_rows(result.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert result.engine["node_ids"] == {"0": "6", "1": "5", "2": "7"}

    rc = build_run_config(None, server_fn=f"{HERE}:toy_server_raises", num_clients=3,
                          out_dir=tmp_path / "bad", tasks=TOY_TASKS, client_data=TOY_DATA)
    with pytest.raises(ValueError, match="broke"):
        server_main(FakeGrid({5: 1, 6: 0, 7: 2}, run_config=rc), ctx, rc)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="toy server function broke"):
        read_run_outputs(tmp_path / "bad")
    from distdd_nas.federation.flower_run import read_ledger

    assert len(read_ledger(tmp_path / "bad" / "ledger.csv").rows) == 6  # the round before


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("task_identity")
def test_default_registry_and_study_config_on_fake_grid() -> None:
    """The ClientApp rebuilds real clients from the study JSON and runs registry tasks."""
    from distdd_nas.federation.flower_app import DEFAULT_CLIENT_DATA, DEFAULT_TASKS, load_study
    from distdd_nas.federation.registry import default_tasks
    from distdd_nas.federation.setup import build_federation
    from tests.conftest import smoke

    study = smoke()
    n = study.partition.num_clients
    rc = {"tasks": DEFAULT_TASKS, "client-data": DEFAULT_CLIENT_DATA,
          "study-config": json.dumps(study.to_dict()), "num-clients": n}
    assert load_study(rc) == study
    grid = FakeGrid({100 + c: c for c in range(n)}, run_config=rc)
    engine = FlowerEngine(grid=grid, num_clients=n, known_tasks=default_tasks())  # type: ignore[arg-type]
    ref = InProcessEngine(clients=build_federation(study).clients, tasks=default_tasks())
    msgs = {c: Message(config={"moments": True}) for c in range(n)}
    got, want = engine.run_round("class_stats", msgs, round=0), ref.run_round(
        "class_stats", msgs, round=0)
    assert sorted(got) == sorted(want) == list(range(n))
    for cid in want:
        for key, arr in want[cid].arrays.items():
            assert got[cid].arrays[key].tobytes() == arr.tobytes(), (cid, key)
    assert ledger_rows(engine.ledger, "class_stats") == ledger_rows(ref.ledger, "class_stats")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("nodes", "match"),
    [({1: 0, 2: 0, 3: 2}, "both report partition-id 0"),
     ({1: 0, 2: 1, 3: 5}, "reports partition-id 5"),
     ({1: 0, 2: 1}, "only 2 of 3 Flower nodes")],
)
@pytest.mark.usefixtures("task_identity")
def test_engine_handshake_errors(nodes: dict[int, int], match: str) -> None:
    grid = FakeGrid(nodes, run_config=_toy_rc(3))
    with pytest.raises(EngineError, match=match):
        FlowerEngine(grid=grid, num_clients=3, connect_timeout=0.3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Real runtimes
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_simulation_matches_inprocess(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from distdd_nas.federation.flower_run import run_on_simulation

    out = tmp_path / "sim"
    result = run_on_simulation(None, server_fn=TOY_SERVER, out_dir=out, num_clients=3,
                               tasks=TOY_TASKS, client_data=TOY_DATA, num_cpus=2,
                               extra={"toy-rounds": 2, "toy-fail": True})
    ref, ref_engine = inprocess_reference(3)
    assert_same_replies(result, ref)
    assert ledger_rows(result.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert result.ledger.total("up", "toy_sum") == ref_engine.ledger.bytes_up
    assert result.ledger.total("down", "toy_sum") == ref_engine.ledger.bytes_down
    # The crashing client is absent; its message was metered down, no reply up.
    assert result.result["failed_round_ids"] == [0, 2]
    assert [(c, d) for _, c, d, _, _ in ledger_rows(result.ledger, "toy_fail")] == [
        (0, "down"), (0, "up"), (1, "down"), (2, "down"), (2, "up")]
    assert result.result["pid"] == os.getpid()  # the ServerApp ran in this process
    assert len(result.engine["rounds"]) == 3 and result.timings["startup"] > 0
    assert_stopped(result.pids, out)


@pytest.mark.timeout(300)
def test_deployment_matches_inprocess(tmp_path: Path) -> None:
    from distdd_nas.federation.flower_run import run_on_deployment

    out = tmp_path / "dep"
    result = run_on_deployment(None, server_fn=TOY_SERVER, out_dir=out, num_clients=2,
                               tasks=TOY_TASKS, client_data=TOY_DATA, python_path=[REPO],
                               startup_timeout=60, run_timeout=240, connect_timeout=60,
                               extra={"toy-rounds": 2})
    ref, ref_engine = inprocess_reference(2)
    assert_same_replies(result, ref)
    assert ledger_rows(result.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert result.ledger.bytes_up == ref_engine.ledger.bytes_up
    assert result.ledger.bytes_down == ref_engine.ledger.bytes_down
    assert result.result["pid"] != os.getpid()  # the ServerApp ran in flwr-serverapp
    assert len(result.pids) >= 3  # SuperLink + 2 SuperNodes (+ their children)
    assert_stopped(result.pids, out)
    assert (out / "app" / "pyproject.toml").is_file()


@pytest.mark.timeout(240)
def test_deployment_failure_reports_and_stops_everything(tmp_path: Path) -> None:
    from distdd_nas.federation.flower_run import run_on_deployment

    out = tmp_path / "fail"
    with pytest.raises(EngineError, match="has no attribute 'no_such_server_fn'"):
        run_on_deployment(None, server_fn=f"{HERE}:no_such_server_fn", out_dir=out,
                          num_clients=1, tasks=TOY_TASKS, client_data=TOY_DATA,
                          python_path=[REPO], startup_timeout=60, run_timeout=120,
                          connect_timeout=60)
    assert_stopped([], out)
