"""FlowerEngine: record converters, message types, and the engine on an in-process Grid
(node map, metering, failures) compared with the in-process engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from distdd_nas.errors import EngineError
from distdd_nas.federation import Message
from tests.federation.flower.toy import (
    FakeGrid,
    drive,
    inprocess_reference,
    ledger_rows,
    toy_rc,
    toy_tasks,
)

pytestmark = pytest.mark.flower

flwr = pytest.importorskip("flwr")
from distdd_nas.federation.flower.engine import (  # noqa: E402
    PARTITION_TASK,
    FlowerEngine,
    from_record_dict,
    message_type_for,
    task_from_message_type,
    to_record_dict,
)

# --------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------


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
CONFIG = {
    "i": 7,
    "neg": -(2**40),
    "f": 0.1,
    "tiny": 5e-324,
    "s": "héllo",
    "t": True,
    "b": False,
    "np_f": np.float32(0.25),
    "np_i": np.int64(9),
}


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


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("task_identity")
def test_engine_on_fake_grid_matches_inprocess() -> None:
    nodes = {9001: 2, 42: 0, 77: 1}  # node ids unrelated to partition ids
    grid = FakeGrid(nodes, run_config=toy_rc(3))
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
    grid = FakeGrid({10: 0, 11: 1, 12: 2}, run_config=toy_rc(3))
    engine = FlowerEngine(grid=grid, num_clients=3, round_timeout=0.3)  # type: ignore[arg-type]
    msgs = {c: Message(arrays={"x": np.ones(4, np.float32)}) for c in range(3)}
    # A client that raises: absent; its message still went down, no reply came up.
    assert sorted(engine.run_round("toy_fail", msgs, round=0)) == [0, 2]
    rows = ledger_rows(engine.ledger, "toy_fail")
    assert [(c, d) for _, c, d, _, _ in rows] == [
        (0, "down"),
        (0, "up"),
        (1, "down"),
        (2, "down"),
        (2, "up"),
    ]
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
@pytest.mark.parametrize(
    ("nodes", "match"),
    [
        ({1: 0, 2: 0, 3: 2}, "both report partition-id 0"),
        ({1: 0, 2: 1, 3: 5}, "reports partition-id 5"),
        ({1: 0, 2: 1}, "only 2 of 3 Flower nodes"),
    ],
)
@pytest.mark.usefixtures("task_identity")
def test_engine_handshake_errors(nodes: dict[int, int], match: str) -> None:
    grid = FakeGrid(nodes, run_config=toy_rc(3))
    with pytest.raises(EngineError, match=match):
        FlowerEngine(grid=grid, num_clients=3, connect_timeout=0.3)  # type: ignore[arg-type]
