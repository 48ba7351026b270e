"""The Flower apps on an in-process Grid: the ServerApp's main writes its outputs (and its
failures), and the ClientApp rebuilds real study clients from the run config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distdd_nas.errors import EngineError
from distdd_nas.federation import InProcessEngine, Message
from tests.federation.flower.toy import (
    HERE,
    TOY_DATA,
    TOY_SERVER,
    TOY_TASKS,
    FakeGrid,
    assert_same_replies,
    inprocess_reference,
    ledger_rows,
)

pytestmark = pytest.mark.flower

flwr = pytest.importorskip("flwr")
from distdd_nas.federation.flower.engine import FlowerEngine  # noqa: E402


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("task_identity")
def test_server_main_writes_outputs_and_errors(tmp_path: Path) -> None:
    """The ServerApp's main on a fake Grid: outputs round-trip; a failure is recorded, raised."""
    from flwr.app import Context, RecordDict

    from distdd_nas.federation.flower.apps import server_main
    from distdd_nas.federation.flower.launch import build_run_config
    from distdd_nas.federation.flower.outputs import read_run_outputs

    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    rc = build_run_config(
        None,
        server_fn=TOY_SERVER,
        num_clients=3,
        out_dir=tmp_path / "ok",
        tasks=TOY_TASKS,
        client_data=TOY_DATA,
        extra={"toy-rounds": 2},
    )
    server_main(FakeGrid({5: 1, 6: 0, 7: 2}, run_config=rc), ctx, rc)  # type: ignore[arg-type]
    result = read_run_outputs(tmp_path / "ok")
    ref, ref_engine = inprocess_reference(3)
    assert_same_replies(result, ref)
    assert ledger_rows(result.ledger, "toy_sum") == ledger_rows(ref_engine.ledger, "toy_sum")
    assert result.engine["node_ids"] == {"0": "6", "1": "5", "2": "7"}

    rc = build_run_config(
        None,
        server_fn=f"{HERE}:toy_server_raises",
        num_clients=3,
        out_dir=tmp_path / "bad",
        tasks=TOY_TASKS,
        client_data=TOY_DATA,
    )
    with pytest.raises(ValueError, match="broke"):
        server_main(FakeGrid({5: 1, 6: 0, 7: 2}, run_config=rc), ctx, rc)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="toy server function broke"):
        read_run_outputs(tmp_path / "bad")
    from distdd_nas.federation.flower.outputs import read_ledger

    assert len(read_ledger(tmp_path / "bad" / "ledger.csv").rows) == 6  # the round before


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("task_identity")
def test_default_registry_and_study_config_on_fake_grid() -> None:
    """The ClientApp rebuilds real clients from the study JSON and runs registry tasks."""
    from distdd_nas.federation.flower.apps import DEFAULT_CLIENT_DATA, DEFAULT_TASKS, load_study
    from distdd_nas.study import build_federation, default_tasks
    from tests.conftest import smoke

    study = smoke()
    n = study.partition.num_clients
    rc = {
        "tasks": DEFAULT_TASKS,
        "client-data": DEFAULT_CLIENT_DATA,
        "study-config": json.dumps(study.to_dict()),
        "num-clients": n,
    }
    assert load_study(rc) == study
    grid = FakeGrid({100 + c: c for c in range(n)}, run_config=rc)
    engine = FlowerEngine(grid=grid, num_clients=n, known_tasks=default_tasks())  # type: ignore[arg-type]
    ref = InProcessEngine(clients=build_federation(study).clients, tasks=default_tasks())
    msgs = {c: Message(config={"moments": True}) for c in range(n)}
    got, want = (
        engine.run_round("class_stats", msgs, round=0),
        ref.run_round("class_stats", msgs, round=0),
    )
    assert sorted(got) == sorted(want) == list(range(n))
    for cid in want:
        for key, arr in want[cid].arrays.items():
            assert got[cid].arrays[key].tobytes() == arr.tobytes(), (cid, key)
    assert ledger_rows(engine.ledger, "class_stats") == ledger_rows(ref.ledger, "class_stats")
