"""Simulated FedAvg: virtual clients mirror the real clients' class mixtures."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.models import ArchSpec
from distdd_nas.search.objective import synthetic_dataset
from distdd_nas.search.simulate import simulated_fedavg, virtual_clients, virtual_counts
from distdd_nas.study import Federation


def test_real_sizes_reproduce_the_counts_exactly() -> None:
    counts = np.array([[5, 0, 3], [0, 7, 1]])
    assert (virtual_counts(counts) == counts).all()
    assert (virtual_counts(counts, total=1000) == counts).all()


def test_scaled_counts_keep_each_clients_mixture() -> None:
    counts = np.array([[300, 100, 0, 600], [10, 10, 80, 0], [0, 0, 0, 50]])
    v = virtual_counts(counts, total=115)  # a tenth of the 1150 real examples
    assert v.sum() == 115
    sizes = v.sum(axis=1)
    assert list(sizes) == [100, 10, 5]  # client shares 1000:100:50 kept
    for real, virt in zip(counts, v, strict=True):
        share_real = real / real.sum()
        share_virt = virt / virt.sum()
        assert np.all(np.abs(share_virt - share_real) <= 1.0 / virt.sum() + 1e-12)
        assert ((real > 0) == (virt > 0)).all()  # same classes held, no others


def test_a_rare_class_keeps_one_image() -> None:
    v = virtual_counts(np.array([[1000, 1, 0]]), total=10)
    assert list(v[0]) == [9, 1, 0]


def test_virtual_clients_hold_the_planned_labels(
    distilled: DistilledSet, federation: Federation, counts: np.ndarray
) -> None:
    synthetic = synthetic_dataset(distilled, federation.train)
    clients = virtual_clients(synthetic, counts, seed=0, total=300)
    plan = virtual_counts(counts, total=300)
    assert len(clients) == len(counts)
    for client, row in zip(clients, plan, strict=True):
        assert client.dataset is synthetic  # index views, never copies
        labels = client.train_labels()
        assert (np.bincount(labels, minlength=10) == row).all()
        # each class's 3 synthetic images are used as evenly as possible
        for c in np.flatnonzero(row):
            used = np.bincount(client.train_indices[labels == c], minlength=len(synthetic))
            used = used[used > 0]
            assert used.max() - used.min() <= 1
        assert len(client.holdout_indices) == 0
    again = virtual_clients(synthetic, counts, seed=0, total=300)
    assert all(
        (a.train_indices == b.train_indices).all() for a, b in zip(clients, again, strict=True)
    )


def test_errors(distilled: DistilledSet, federation: Federation) -> None:
    synthetic = synthetic_dataset(distilled, federation.train)
    with pytest.raises(ConfigError, match="expected clients × 10 classes"):
        virtual_clients(synthetic, np.ones((2, 3), dtype=np.int64), seed=0)
    with pytest.raises(ConfigError, match="non-negative integers"):
        virtual_counts(np.array([[1.5, 2.0]]))
    only_two = synthetic.subset(np.flatnonzero(synthetic.labels.numpy() < 2))
    with pytest.raises(ConfigError, match="holds class 5 but the synthetic set has no image"):
        virtual_clients(only_two, np.eye(10, dtype=np.int64)[[5]], seed=0)


def test_simulated_fedavg_is_deterministic(
    distilled: DistilledSet,
    federation: Federation,
    counts: np.ndarray,
    fedavg_base: FedAvgSettings,
) -> None:
    synthetic = synthetic_dataset(distilled, federation.train)
    rounds: list[dict[str, float]] = []
    kw = {
        "arch": ArchSpec(depth=1, width=4),
        "synthetic": synthetic,
        "counts": counts,
        "settings": fedavg_base,
        "test": synthetic,
        "seed": 3,
        "total": 100,
    }
    a = simulated_fedavg(**kw, on_round=rounds.append)  # type: ignore[arg-type]
    b = simulated_fedavg(**kw)  # type: ignore[arg-type]
    assert len(rounds) == fedavg_base.rounds
    assert 0.0 <= a.test_accuracy <= 1.0
    assert a.test_accuracy == b.test_accuracy
