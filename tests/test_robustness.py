"""Faulty federations end to end on the smoke study: Byzantine clients never poison the
synthetic set or the model, robust aggregation holds accuracy, failing clients are retried or
skipped, and the in-process and Flower engines inject the very same faults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distdd_nas.stages.on_engine import on_configured_engine
from distdd_nas.study import Study
from tests.conftest import smoke

FEDAVG = ("partition.num_clients=5", "fedavg.rounds=4")
DISTILL = ("distill.iterations=2", "distill.ipc=2", "partition.num_clients=5")


def fedavg_accuracy(*overrides: str) -> float:
    result, _ = on_configured_engine(Study(smoke(*FEDAVG, *overrides)), "fedavg")
    return float(result.test_accuracy)


def test_nan_clients_never_reach_the_synthetic_set() -> None:
    result, _ = on_configured_engine(
        Study(
            smoke(
                *DISTILL,
                "federation.byzantine_fraction=0.2",
                "federation.byzantine_kind=non_finite",
            )
        ),
        "distill",
    )
    assert torch.isfinite(result.synthetic.images).all()
    assert (result.history["rejected"] > 0).all(), "the NaN client's replies are rejected"


@pytest.mark.timeout(300)
def test_a_boosted_client_is_held_off_by_the_guard_and_centered_clip() -> None:
    clean = fedavg_accuracy()
    attack = ("federation.byzantine_fraction=0.2", "federation.byzantine_kind=scale")
    unguarded = fedavg_accuracy(*attack, 'fedavg.aggregator={name="mean", max_deviation_ratio=0}')
    guarded = fedavg_accuracy(*attack)  # the default: mean behind the guard
    clipped = fedavg_accuracy(*attack, 'fedavg.aggregator="centered_clip"')
    assert unguarded < clean - 0.2, "a ×100 update must break the unguarded mean"
    assert guarded > unguarded + 0.1, "the default guard bounds the boosted update"
    assert clipped >= clean - 0.1, "centered clipping holds"


def test_robust_aggregation_beats_the_mean_against_a_sign_flipper() -> None:
    attack = ("federation.byzantine_fraction=0.2", "federation.byzantine_kind=sign_flip")
    mean = fedavg_accuracy(*attack)
    clipped = fedavg_accuracy(*attack, 'fedavg.aggregator="centered_clip"')
    # measured on this study: mean 0.23, centered_clip 0.64, clean 0.91 (4 rounds, 5 clients)
    assert clipped > mean + 0.2


def test_failing_clients_are_retried_and_skipped_rounds_logged() -> None:
    study = Study(smoke(*FEDAVG, "federation.failure_rate=0.5", "federation.min_replies=4"))
    result, ledger = on_configured_engine(study, "fedavg")
    h = result.history
    assert (h["attempts"] > 1).any(), "a round short of 4 replies is sent again"
    assert set(h.columns) >= {"attempts", "skipped", "replies"}
    frame = ledger.to_frame()
    down = frame[frame["direction"] == "down"].groupby("round").size().to_numpy()
    up = frame[frame["direction"] == "up"].groupby("round").size().to_numpy()
    # a retry goes only to the clients that have not replied: every delivery is a reply or a
    # drop, and a round sends more than its 5 first messages only if it was retried
    assert ((down > 5) == (h["attempts"].to_numpy() > 1)).all()
    np.testing.assert_array_equal(up, h["replies"].to_numpy())
    assert h.loc[h["skipped"] == 0, "replies"].ge(4).all()


@pytest.mark.flower
@pytest.mark.timeout(300)
def test_flower_simulation_injects_the_same_faults_as_inprocess() -> None:
    faults = (
        *DISTILL,
        "partition.num_clients=3",
        "federation.failure_rate=0.3",
        "federation.byzantine_fraction=0.34",
        "federation.byzantine_kind=sign_flip",
    )
    local = Study(smoke(*faults))
    flower = Study(
        smoke(*faults, "federation.engine=flower", "federation.flower_backend=simulation")
    )
    ref, ref_ledger = on_configured_engine(local, "distill")
    got, ledger = on_configured_engine(flower, "distill")
    assert (ref_ledger.to_frame()["direction"] == "down").sum() > (
        ref_ledger.to_frame()["direction"] == "up"
    ).sum(), "some deliveries must have failed"
    assert (got.synthetic.images - ref.synthetic.images).abs().max().item() <= 1e-6
    key = ["round", "client", "direction"]
    a = ledger.to_frame().sort_values(key).reset_index(drop=True)
    b = ref_ledger.to_frame().sort_values(key).reset_index(drop=True)
    assert a.equals(b), "both engines drop and corrupt the same deliveries"
