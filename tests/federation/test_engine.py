"""The in-process engine: delivery, metering, sampling, failures; FedAvg's ledger formula."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError, EngineError
from distdd_nas.fedavg.server import run_fedavg
from distdd_nas.federation import InProcessEngine, Message, select_clients
from distdd_nas.federation.faults import Faults
from distdd_nas.models import build_model
from distdd_nas.seeding import derive_seed
from distdd_nas.study import Study, build_federation
from tests.conftest import smoke


def echo(client, msg: Message) -> Message:  # type: ignore[no-untyped-def]
    """Toy task: reply the received arrays doubled plus the client's size."""
    arrays = {k: v * 2 for k, v in msg.arrays.items()}
    return Message(arrays=arrays, config={"n": client.num_train})


@pytest.fixture(scope="module")
def federation():  # type: ignore[no-untyped-def]
    return build_federation(smoke())


def test_clients_are_index_views_on_one_dataset(federation) -> None:  # type: ignore[no-untyped-def]
    datasets = {id(c.dataset) for c in federation.clients}
    assert len(datasets) == 1, "clients must share one dataset, not hold copies"
    all_idx = np.concatenate(
        [c.train_indices for c in federation.clients]
        + [c.holdout_indices for c in federation.clients]
    )
    assert len(all_idx) == len(set(all_idx.tolist())) == len(federation.train)


def test_run_round_meters_every_payload(federation) -> None:  # type: ignore[no-untyped-def]
    engine = InProcessEngine(clients=federation.clients, tasks={"echo": echo})
    payload = {"x": np.ones((10, 3), dtype=np.float32)}  # 120 bytes
    replies = engine.run_round(
        "echo", {2: Message(arrays=payload), 0: Message(arrays=payload)}, round=7
    )
    assert list(replies) == [0, 2]
    np.testing.assert_array_equal(replies[0].arrays["x"], 2 * payload["x"])
    frame = engine.ledger.to_frame()
    assert list(frame.columns) == ["round", "client", "direction", "kind", "bytes"]
    assert len(frame) == 4 and set(frame["round"]) == {7} and set(frame["kind"]) == {"echo"}
    assert engine.ledger.bytes_down == 240 and engine.ledger.bytes_up == 240


def test_failure_injection_is_seeded_and_drops_replies(federation) -> None:  # type: ignore[no-untyped-def]
    def run() -> list[list[int]]:
        tasks = Faults(failure_rate=0.5, seed=3).wrap({"echo": echo}, num_clients=4)
        engine = InProcessEngine(clients=federation.clients, tasks=tasks)
        rounds = []
        for r in range(20):
            msgs = {c: Message(arrays={"x": np.zeros(4)}, config={"seed": r}) for c in range(4)}
            rounds.append(sorted(engine.run_round("echo", msgs, round=r)))
        return rounds

    first = run()
    assert first == run()
    dropped = 80 - sum(len(r) for r in first)
    assert 25 <= dropped <= 55, "rate 0.5 drops about half of 80 deliveries"
    # a dropped delivery is metered down, never up
    engine = InProcessEngine(
        clients=federation.clients,
        tasks=Faults(failure_rate=0.5, seed=3).wrap({"echo": echo}, num_clients=4),
    )
    replies = engine.run_round("echo", {c: Message(config={"seed": 0}) for c in range(4)}, round=0)
    frame = engine.ledger.to_frame()
    assert (frame["direction"] == "down").sum() == 4
    assert sorted(frame.loc[frame["direction"] == "up", "client"]) == sorted(replies)


def test_a_task_error_that_is_not_a_drop_propagates(federation) -> None:  # type: ignore[no-untyped-def]
    def broken(client, msg):  # type: ignore[no-untyped-def]
        raise ValueError("bug in the task")

    engine = InProcessEngine(clients=federation.clients, tasks={"broken": broken})
    with pytest.raises(ValueError, match="bug in the task"):
        engine.run_round("broken", {0: Message()}, round=0)


def test_engine_errors(federation) -> None:  # type: ignore[no-untyped-def]
    engine = InProcessEngine(clients=federation.clients, tasks={"echo": echo})
    with pytest.raises(EngineError, match=r"unknown client task 'train'; registered tasks: echo"):
        engine.run_round("train", {0: Message()}, round=0)
    with pytest.raises(EngineError, match=r"client id 9 does not exist"):
        engine.run_round("echo", {9: Message()}, round=0)
    with pytest.raises(ConfigError, match=r"failure_rate 1.0 is out of range"):
        Faults(failure_rate=1.0)


def test_select_clients_seeded_and_sized() -> None:
    a = select_clients(num_clients=10, fraction=0.3, seed=1, round=5)
    assert a == select_clients(num_clients=10, fraction=0.3, seed=1, round=5)
    assert len(a) == 3 and a == sorted(a)
    assert select_clients(num_clients=10, fraction=1.0, seed=1, round=5) == list(range(10))
    assert len(select_clients(num_clients=3, fraction=0.01, seed=0, round=0)) == 1
    with pytest.raises(ConfigError, match=r"client fraction 0 is out of range"):
        select_clients(num_clients=3, fraction=0, seed=0, round=0)


@pytest.mark.parametrize(
    ("fraction", "norm"), [(1.0, "instance"), (0.5, "instance"), (1.0, "batch")]
)
def test_fedavg_ledger_equals_analytical_count(fraction: float, norm: str) -> None:
    # BatchNorm: its 0-d num_batches_tracked buffer must survive the round trip unchanged.
    config = smoke(
        "fedavg.rounds=3",
        "fedavg.local_epochs=1",
        f"federation.fraction={fraction}",
        f'model.norm="{norm}"',
    )
    study = Study(config)
    fed = study.federation
    engine = study.make_engine()
    result = run_fedavg(
        engine, arch=study.reference, test=fed.test, settings=study.fedavg_settings, seed=0
    )
    model = build_model(
        study.reference, input_shape=fed.train.input_shape, num_classes=fed.num_classes
    )
    param_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    per_round = max(1, int(np.floor(fraction * fed.num_clients + 0.5)))
    expected = 3 * per_round * param_bytes
    assert engine.ledger.total("down", "local_train") == expected
    assert engine.ledger.total("up", "local_train") == expected
    per_client = engine.ledger.to_frame().groupby("client")["bytes"].sum()
    assert per_client.sum() == 2 * expected
    assert all(
        v.shape == t.shape
        for v, t in zip(result.parameters.values(), model.state_dict().values(), strict=True)
    )


def test_fedavg_excludes_a_nan_client_and_stays_finite() -> None:
    from distdd_nas.fedavg.tasks import local_train

    study = Study(smoke("fedavg.rounds=2"))
    fed = study.federation

    def poisoned(client, msg):  # type: ignore[no-untyped-def]
        reply = local_train(client, msg)
        if client.cid == 1:
            arrays = {
                k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
                for k, v in reply.arrays.items()
            }
            return Message(arrays=arrays, config=reply.config)
        return reply

    engine = InProcessEngine(clients=fed.clients, tasks={"local_train": poisoned})
    result = run_fedavg(
        engine, arch=study.reference, test=fed.test, settings=study.fedavg_settings, seed=0
    )
    assert result.history["rejected"].tolist() == [1, 1]
    assert all(np.isfinite(v).all() for v in result.parameters.values())
    assert result.test_accuracy > 0.3


def test_a_diverging_client_stops_early_and_the_round_is_unchanged(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Client 1 trains at lr 50 (leaky ReLU, no normalisation, no pooling) and blows up within
    # its epoch; the others train normally. The server drops non-finite updates, so stopping
    # client 1 at its first non-finite step must leave FedAvg's weights, history and ledger bit
    # for bit as the full epochs leave them, while client 1 takes fewer steps.
    import functools

    import torch.nn.functional as F

    from distdd_nas.fedavg.tasks import evaluate, local_train

    steps: dict[int, int] = {}
    cross_entropy = F.cross_entropy
    current = {"cid": -1}

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("reduction", "mean") == "mean":
            steps[current["cid"]] = steps.get(current["cid"], 0) + 1
        return cross_entropy(*args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", counting)
    study = Study(
        smoke("fedavg.rounds=2", 'model.norm="none"', 'model.pool="none"', 'model.act="leakyrelu"')
    )
    fed = study.federation
    initial = build_model(
        study.reference,
        input_shape=fed.train.input_shape,
        num_classes=fed.num_classes,
        seed=derive_seed(0, "fedavg", "init"),
    ).state_dict()

    def run(stop: bool):  # type: ignore[no-untyped-def]
        steps.clear()
        train = functools.partial(local_train, stop_if_diverged=stop)

        def task(client, msg):  # type: ignore[no-untyped-def]
            current["cid"] = client.cid
            if client.cid == 1:
                msg = Message(arrays=msg.arrays, config={**msg.config, "lr": 50.0})
            return train(client, msg)

        engine = InProcessEngine(
            clients=fed.clients, tasks={"local_train": task, "evaluate": evaluate}
        )
        result = run_fedavg(
            engine, arch=study.reference, test=fed.test, settings=study.fedavg_settings, seed=0
        )
        return result, dict(steps), engine.ledger.to_frame()

    stopped, stopped_steps, stopped_ledger = run(True)
    full, full_steps, full_ledger = run(False)
    assert full.history["rejected"].tolist() == [1, 1], "client 1, and only it, diverges"
    assert stopped_steps[1] < full_steps[1] / 2, (stopped_steps, full_steps)
    assert {c: n for c, n in stopped_steps.items() if c != 1} == {
        c: n for c, n in full_steps.items() if c != 1
    }
    for key, value in full.parameters.items():
        np.testing.assert_array_equal(stopped.parameters[key], value)
    assert any(
        not np.array_equal(full.parameters[k], initial[k].numpy()) for k in full.parameters
    ), "the healthy clients move the model"
    columns = [c for c in full.history.columns if c != "wall_s"]
    assert stopped.history[columns].equals(full.history[columns])
    assert stopped_ledger.equals(full_ledger)
