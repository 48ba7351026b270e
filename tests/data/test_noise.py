"""Label noise: exact counts per noisy client, the right flips, nothing else touched, seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distdd_nas.data import FederatedSplit, IidPartitioner, NoiseRecord, apply_label_noise
from distdd_nas.errors import ConfigError, DataError

C = 10


def world(num_clients: int = 10, per_class: int = 300) -> tuple[np.ndarray, FederatedSplit]:
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(C), per_class))
    return labels, IidPartitioner(num_clients=num_clients).split(labels, seed=0)


def noisy(
    labels: np.ndarray, split: FederatedSplit, **kwargs: object
) -> tuple[np.ndarray, NoiseRecord]:
    args: dict = {
        "kind": "symmetric",
        "rate": 0.3,
        "client_fraction": 0.5,
        "num_classes": C,
        "seed": 7,
    }
    args.update(kwargs)
    return apply_label_noise(labels, split, **args)


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_exact_number_changed_on_noisy_clients_and_none_elsewhere(kind: str) -> None:
    labels, split = world()
    before = labels.copy()
    out, record = noisy(labels, split, kind=kind)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert out is not labels
    assert record.kind == kind and record.rate == 0.3
    assert len(record.noisy_clients) == 5
    assert sorted(record.changed_per_client) == list(record.noisy_clients)
    for cid, idx in enumerate(split.client_indices):
        changed = int((out[idx] != labels[idx]).sum())
        if cid in record.noisy_clients:
            assert changed == round(0.3 * len(idx)) == record.changed_per_client[cid]
        else:
            assert changed == 0
    assert record.total_changed == int((out != labels).sum())


def test_symmetric_goes_to_every_other_class_never_the_same() -> None:
    labels, split = world(num_clients=2, per_class=1000)
    out, _ = noisy(labels, split, kind="symmetric", rate=0.5, client_fraction=1.0)
    moved = out != labels
    assert moved.sum() == 5000  # a "change" to the same class would show up as fewer
    for c in range(C):
        targets = np.unique(out[moved & (labels == c)])
        np.testing.assert_array_equal(targets, np.setdiff1d(np.arange(C), [c]))


def test_pair_maps_each_class_to_the_next() -> None:
    labels, split = world()
    out, _ = noisy(labels, split, kind="pair", rate=0.4, client_fraction=1.0)
    moved = out != labels
    assert moved.any()
    np.testing.assert_array_equal(out[moved], (labels[moved] + 1) % C)
    assert set(out[moved & (labels == C - 1)]) == {0}


def test_same_seed_same_noise_other_seed_other_noise() -> None:
    labels, split = world()
    a, ra = noisy(labels, split, seed=1)
    b, rb = noisy(labels, split, seed=1)
    c, _ = noisy(labels, split, seed=2)
    np.testing.assert_array_equal(a, b)
    assert ra == rb
    assert not np.array_equal(a, c)


def test_counts_round_half_up_per_client() -> None:
    labels = np.arange(14) % C
    split = FederatedSplit(client_indices=(np.arange(7), np.arange(7, 14)), num_classes=C)
    out, record = noisy(labels, split, rate=0.5, client_fraction=1.0)
    assert record.changed_per_client == {0: 4, 1: 4}  # 3.5 → 4 on both clients
    assert int((out != labels).sum()) == 8
    _, half = noisy(labels, split, rate=0.5, client_fraction=0.5)
    assert len(half.noisy_clients) == math.floor(0.5 * 2 + 0.5) == 1


def test_none_and_zero_rate_change_nothing() -> None:
    labels, split = world()
    out, record = noisy(labels, split, kind="none", rate=0.9, client_fraction=1.0)
    np.testing.assert_array_equal(out, labels)
    assert record == NoiseRecord(kind="none", rate=0.0)
    out, record = noisy(labels, split, rate=0.0, client_fraction=0.3)
    np.testing.assert_array_equal(out, labels)
    assert len(record.noisy_clients) == 3 and record.total_changed == 0


def test_record_tables() -> None:
    record = NoiseRecord(
        kind="pair", rate=0.2, noisy_clients=(1, 3), changed_per_client={1: 5, 3: 2}
    )
    assert record.to_dict() == {
        "kind": "pair",
        "rate": 0.2,
        "noisy_clients": [1, 3],
        "changed_per_client": {"1": 5, "3": 2},
    }
    frame = record.to_frame(4)
    assert frame.index.name == "client"
    assert frame["noisy"].tolist() == [False, True, False, True]
    assert frame["changed"].tolist() == [0, 5, 0, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gaussian"}, r"unknown noise kind 'gaussian'.*none, symmetric, pair"),
        ({"rate": 1.5}, r"noise.rate=1.5 is out of range; use 0 <= rate <= 1"),
        ({"rate": -0.1}, r"noise.rate=-0.1 is out of range"),
        ({"rate": float("nan")}, r"noise.rate=nan is out of range"),
        ({"client_fraction": 2.0}, r"noise.client_fraction=2.0 is out of range"),
        ({"num_classes": 1}, r"at least 2 classes.*noise.kind"),
    ],
)
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    labels, split = world()
    with pytest.raises(ConfigError, match=message):
        noisy(np.zeros_like(labels) if "num_classes" in kwargs else labels, split, **kwargs)


def test_labels_that_do_not_fit_are_data_errors() -> None:
    labels, split = world()
    with pytest.raises(DataError, match="num_classes=5"):
        noisy(labels, split, num_classes=5)
    with pytest.raises(DataError, match="split indexes example"):
        noisy(labels[:100], split)
