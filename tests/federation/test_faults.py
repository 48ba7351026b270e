"""Injected client faults: attack kinds against hand-computed values, seeded and engine-agnostic
decisions, and the quorum that retries or skips a short round."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.federation import InProcessEngine, Message
from distdd_nas.federation.engine import ClientDropped
from distdd_nas.federation.faults import Faults, attack
from distdd_nas.federation.quorum import Quorum, deliver
from distdd_nas.study import build_federation
from tests.conftest import smoke

REF = np.array([1.0, 1.0, 1.0], dtype=np.float32)
HONEST = np.array([2.0, 0.0, 1.0], dtype=np.float32)  # update (1, −1, 0)


@pytest.mark.parametrize(
    ("kind", "expected"), [("scale", [101.0, -99.0, 1.0]), ("sign_flip", [0.0, 2.0, 1.0])]
)
def test_update_attacks_hand_computed(kind: str, expected: list[float]) -> None:
    rng = np.random.default_rng(0)
    got = attack(HONEST, reference=REF, kind=kind, scale=100.0, rng=rng)
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))
    assert got.dtype == np.float32


def test_noise_keeps_the_update_norm_and_nan_is_nan() -> None:
    rng = np.random.default_rng(0)
    noisy = attack(HONEST, reference=REF, kind="noise", scale=1.0, rng=rng)
    assert np.linalg.norm(noisy - REF) == pytest.approx(np.sqrt(2), rel=1e-6)
    assert np.isnan(attack(HONEST, reference=None, kind="non_finite", scale=1.0, rng=rng)).all()
    # without a reference of the same shape the array is the update itself (gradients)
    np.testing.assert_array_equal(
        attack(HONEST, reference=None, kind="sign_flip", scale=1.0, rng=rng), -HONEST
    )
    counts = np.array([3, 4])
    assert attack(counts, reference=None, kind="non_finite", scale=1.0, rng=rng) is counts


def echo(client, msg: Message) -> Message:  # type: ignore[no-untyped-def]
    return Message(arrays={"grads": np.ones(3, np.float32)}, config={"cid": client.cid})


def test_byzantine_clients_are_a_seeded_fixed_set() -> None:
    faults = Faults(byzantine_fraction=0.3, byzantine_kind="sign_flip", seed=4)
    liars = faults.byzantine_clients(10)
    assert len(liars) == 3 and liars == faults.byzantine_clients(10)
    fed = build_federation(smoke("partition.num_clients=10"))
    tasks = faults.wrap({"class_gradients": echo, "class_stats": echo}, num_clients=10)
    engine = InProcessEngine(clients=fed.clients, tasks=tasks)
    msgs = {c: Message(config={"seed": 1}) for c in range(10)}
    got = engine.run_round("class_gradients", msgs, round=1)
    flipped = {c for c, r in got.items() if r.arrays["grads"][0] < 0}
    assert flipped == liars
    census = engine.run_round("class_stats", msgs, round=0)
    assert all(r.arrays["grads"][0] == 1 for r in census.values()), "the census stays honest"


def test_bad_fault_settings_name_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"byzantine_fraction 0.5 is out of range"):
        Faults(byzantine_fraction=0.5)
    with pytest.raises(ConfigError, match=r"unknown byzantine_kind 'flip'; choose one of"):
        Faults(byzantine_kind="flip")


def test_a_short_round_is_retried_then_skipped() -> None:
    fed = build_federation(smoke())
    tasks = Faults(failure_rate=0.6, seed=0).wrap({"echo": echo}, num_clients=4)
    engine = InProcessEngine(clients=fed.clients, tasks=tasks)
    msgs = {c: Message(config={"seed": 7}) for c in range(4)}
    ok = deliver(engine, "echo", msgs, round=1, quorum=Quorum(min_replies=1, retries=5))
    assert not ok.skipped and len(ok.replies) >= 1

    # client 3 never replies: 4 replies are impossible; a retry goes only to client 3
    def gone(client, msg: Message) -> Message:  # type: ignore[no-untyped-def]
        if client.cid == 3:
            raise ClientDropped("client 3 is gone")
        return echo(client, msg)

    engine3 = InProcessEngine(clients=fed.clients, tasks={"echo": gone})
    short = deliver(engine3, "echo", msgs, round=2, quorum=Quorum(min_replies=4, retries=2))
    assert short.skipped and short.attempts == 3 and sorted(short.replies) == [0, 1, 2]
    downs = engine3.ledger.to_frame().query("direction == 'down'").groupby("client").size()
    assert downs.to_dict() == {0: 1, 1: 1, 2: 1, 3: 3}
    # retries are fresh draws: at rate 0.6 some of 10 rounds needs a retry to reach 2 replies
    attempts = [
        deliver(
            engine,
            "echo",
            {c: Message(config={"seed": s}) for c in range(4)},
            round=3,
            quorum=Quorum(min_replies=2, retries=10),
        ).attempts
        for s in range(10)
    ]
    assert max(attempts) > 1 and all(a <= 11 for a in attempts)
