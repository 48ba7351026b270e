"""Simulated FedAvg: virtual clients mirror the real clients' class mixtures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.federation import ClientData, Message
from distdd_nas.models import ArchSpec
from distdd_nas.search import simulate
from distdd_nas.search.objective import synthetic_dataset
from distdd_nas.search.simulate import (
    local_steps,
    simulated_fedavg,
    virtual_batch,
    virtual_clients,
    virtual_counts,
)
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


def test_real_steps_by_hand() -> None:
    """Two clients of 40 and 60 real examples, a virtual set of half the size, batch 10, two
    local epochs: real clients take ⌈40/10⌉·2 = 8 and ⌈60/10⌉·2 = 12 steps a round. Virtual
    twins hold 20 and 30 examples; with the study's batch they would take ⌈20/10⌉·2 = 4 and
    ⌈30/10⌉·2 = 6, with the scaled batch 10·50/100 = 5 they take 8 and 12 again."""
    counts = np.array([[30, 10], [0, 60]])
    plan = virtual_counts(counts, total=50)
    assert plan.tolist() == [[15, 5], [0, 30]]
    sizes = plan.sum(axis=1)
    assert local_steps(counts.sum(axis=1), batch_size=10, epochs=2).tolist() == [8, 12]
    assert local_steps(sizes, batch_size=10, epochs=2).tolist() == [4, 6]
    assert virtual_batch(10, virtual=50, real=100) == (50, 5)
    assert local_steps(sizes, batch_size=5, epochs=2).tolist() == [8, 12]
    # b = 64 · 2000 / 9000 = 14.2 → 14, and V = 14 · 9000 / 64 = 1968.75 → 1969 examples
    assert virtual_batch(64, virtual=2000, real=9000) == (1969, 14)
    assert virtual_batch(8, virtual=10, real=1000) == (125, 1)  # a batch holds one example
    assert virtual_batch(32, virtual=5000, real=100) == (5000, 32)  # real sizes: unchanged


@pytest.mark.parametrize("steps", ["scaled", "real"])
def test_virtual_clients_take_the_planned_steps(
    distilled: DistilledSet,
    federation: Federation,
    counts: np.ndarray,
    fedavg_base: FedAvgSettings,
    monkeypatch: pytest.MonkeyPatch,
    steps: str,
) -> None:
    """Optimiser steps counted inside each virtual client's local training, per round, against
    the real clients' ⌈N_i / B⌉ · E (``real``: within one step per epoch, the rounding of the
    scaled batch) or the virtual sizes at the study's batch (``scaled``)."""
    taken: dict[int, int] = {}
    current: list[int] = []
    sgd_step, train = torch.optim.SGD.step, simulate.local_train

    def counting_step(self: torch.optim.SGD, *a: object, **k: object) -> object:
        taken[current[-1]] = taken.get(current[-1], 0) + 1
        return sgd_step(self, *a, **k)

    def spy(client: ClientData, msg: Message) -> Message:
        current.append(client.cid)
        return train(client, msg)

    monkeypatch.setattr(torch.optim.SGD, "step", counting_step)
    monkeypatch.setattr(simulate, "local_train", spy)
    settings = replace(fedavg_base, rounds=1, local=replace(fedavg_base.local, epochs=2))
    simulated_fedavg(
        arch=ArchSpec(depth=1, width=4),
        synthetic=synthetic_dataset(distilled, federation.train),
        counts=counts,
        settings=settings,
        test=federation.test,
        seed=0,
        total=200,
        steps=steps,  # type: ignore[arg-type]
    )
    got = np.array([taken[c] for c in range(len(counts))])
    batch, epochs = settings.local.batch_size, settings.local.epochs
    real = local_steps(counts.sum(axis=1), batch_size=batch, epochs=epochs)
    virtual = local_steps(
        virtual_counts(counts, total=200).sum(axis=1), batch_size=batch, epochs=epochs
    )
    if steps == "real":
        assert np.all(np.abs(got - real) <= epochs), (got, real)
        assert got.sum() > 3 * virtual.sum()  # 200 of ~1,250 examples: far more than scaled
    else:
        assert got.tolist() == virtual.tolist()


def test_unknown_virtual_steps_is_refused(
    distilled: DistilledSet, federation: Federation, counts: np.ndarray
) -> None:
    with pytest.raises(ConfigError, match="unknown virtual steps 'all'; use one of scaled, real"):
        simulated_fedavg(
            arch=ArchSpec(depth=1, width=4),
            synthetic=synthetic_dataset(distilled, federation.train),
            counts=counts,
            settings=FedAvgSettings(rounds=1),
            test=federation.test,
            seed=0,
            steps="all",  # type: ignore[arg-type]
        )
