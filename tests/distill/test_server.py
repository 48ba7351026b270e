"""Server pieces: DC's loop table, batch shares, aggregation, initialisation, settings checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distdd_nas.config import DistillSection
from distdd_nas.data import DatasetSplits
from distdd_nas.distill.server import (
    aggregate_class_gradients,
    batch_shares,
    check_class_totals,
    check_settings,
    dc_loops,
    init_client_mean,
)
from distdd_nas.errors import ConfigError
from distdd_nas.federation import Message
from distdd_nas.models import build_model, get_parameters
from tests.distill.conftest import TINY, iid_parts, make_engine


def test_dc_loop_table_and_its_interpolation() -> None:
    assert dc_loops(1) == (1, 1)
    assert dc_loops(10) == (10, 50)
    assert dc_loops(50) == (50, 10)
    # between entries: outer = ipc, inner interpolated by hand: 1 + 49 · 4/9 = 22.8 → 23,
    # 50 + (25 − 50) · 5/10 = 37.5 → 38
    assert dc_loops(5) == (5, 23)
    assert dc_loops(15) == (15, 38)
    assert dc_loops(2) == (2, 6)  # 1 + 49/9 = 6.4
    assert dc_loops(100) == (50, 10)


def test_proportional_shares_sum_to_the_global_batch() -> None:
    counts = np.array([[100, 0, 3, 50], [300, 10, 1, 50], [600, 5, 0, 0]])
    take = batch_shares(counts, batch_real=64, mode="proportional")
    np.testing.assert_array_equal(take[:, 0], [6, 19, 38])  # 64·(1, 3, 6)/10, rounded
    np.testing.assert_array_equal(take[:, 1], [0, 10, 5])  # total 15 ≤ 64: everything
    np.testing.assert_array_equal(take[:, 2], [3, 1, 0])
    np.testing.assert_array_equal(take[:, 3], [32, 32, 0])
    assert (take <= counts).all() and ((take > 0) == (counts > 0)).all()
    big = np.array([[5000, 1], [4000, 7000]])
    sums = batch_shares(big, batch_real=256, mode="proportional").sum(axis=0)
    assert (abs(sums - 256) <= len(big)).all()


def test_per_client_shares_cap_at_batch_real() -> None:
    counts = np.array([[100, 0, 3], [300, 10, 1]])
    np.testing.assert_array_equal(
        batch_shares(counts, batch_real=64, mode="per_client"), [[64, 0, 3], [64, 10, 1]]
    )
    with pytest.raises(ConfigError, match="unknown batch_mode 'all'"):
        batch_shares(counts, batch_real=64, mode="all")


def _reply(counts: list[int], grads: np.ndarray) -> Message:
    return Message(
        arrays={"counts": np.asarray(counts, dtype=np.int64), "grads": grads.astype(np.float32)}
    )


def test_aggregation_is_an_example_weighted_mean_per_class() -> None:
    g = np.arange(12, dtype=np.float32).reshape(4, 3)
    replies = {0: _reply([2, 0, 1], g[:2]), 1: _reply([6, 3, 0], g[2:])}
    targets, rejected = aggregate_class_gradients(replies, dim=3)
    assert rejected == [] and sorted(targets) == [0, 1, 2]
    np.testing.assert_allclose(targets[0].numpy(), (2 * g[0] + 6 * g[2]) / 8, rtol=1e-6)
    np.testing.assert_allclose(targets[1].numpy(), g[3])
    np.testing.assert_allclose(targets[2].numpy(), g[1])


def test_claimed_counts_are_capped_at_what_the_server_asked() -> None:
    g = np.arange(12, dtype=np.float32).reshape(4, 3)
    asked = {0: np.array([2, 0, 1]), 1: np.array([6, 3, 0]), 2: np.array([0, 1, 0])}
    replies = {
        0: _reply([2, 0, 1], g[:2]),
        1: _reply([6 * 10**9, 3, 0], g[2:]),  # claims a billion images of class 0
        2: _reply([1, 1, 0], g[:2]),  # sends class 0, which it was not asked for
    }
    targets, rejected = aggregate_class_gradients(replies, dim=3, asked=asked)
    assert rejected == [2]
    np.testing.assert_allclose(targets[0].numpy(), (2 * g[0] + 6 * g[2]) / 8, rtol=1e-6)


def test_aggregation_drops_non_finite_and_malformed_replies() -> None:
    g = np.ones((1, 3), dtype=np.float32)
    bad = g.copy()
    bad[0, 1] = np.nan
    replies = {0: _reply([1, 0], g), 1: _reply([0, 1], bad), 2: _reply([1, 1], g)}
    targets, rejected = aggregate_class_gradients(replies, dim=3)
    assert rejected == [1, 2] and sorted(targets) == [0]  # class 1 has no usable reply
    med, _ = aggregate_class_gradients(
        {0: _reply([1], g), 1: _reply([1], 3 * g), 2: _reply([9], 100 * g)},
        dim=3,
        aggregator="median",
    )
    np.testing.assert_allclose(med[0].numpy(), 3 * g[0])


def test_iid_full_batches_aggregate_to_the_centralized_gradient(digits: DatasetSplits) -> None:
    train = digits.train
    parts = iid_parts(len(train), 4)
    engine = make_engine(train, parts)
    net = build_model(TINY, input_shape=train.input_shape, num_classes=10, seed=5)
    take = np.full(10, 10_000, dtype=np.int64)  # larger than any class: every image is used
    msg = Message(
        arrays={**get_parameters(net), "take": take},
        config={"arch": json.dumps(TINY.to_dict()), "seed": 0},
    )
    replies = engine.run_round("class_gradients", {c: msg for c in range(4)}, round=1)
    dim = sum(p.numel() for p in net.parameters())
    targets, _ = aggregate_class_gradients(replies, dim=dim)
    for c in range(10):
        x = train.images[train.labels == c]
        g = torch.autograd.grad(
            F.cross_entropy(net(x), torch.full((len(x),), c)), list(net.parameters())
        )
        torch.testing.assert_close(
            targets[c], torch.cat([t.reshape(-1) for t in g]), rtol=1e-4, atol=1e-6
        )


def test_client_mean_init_uses_the_pooled_class_moments() -> None:
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(n, 4)) + c for n, c in ((30, 0), (50, 0), (20, 1))]
    stats = [
        {
            "counts": np.array([30, 0]),
            "sum": np.stack([data[0].sum(0), np.zeros(4)]),
            "sumsq": np.stack([(data[0] ** 2).sum(0), np.zeros(4)]),
        },
        {
            "counts": np.array([50, 20]),
            "sum": np.stack([data[1].sum(0), data[2].sum(0)]),
            "sumsq": np.stack([(data[1] ** 2).sum(0), (data[2] ** 2).sum(0)]),
        },
    ]
    gen = torch.Generator().manual_seed(0)
    images = init_client_mean(ipc=20_000, stats=stats, shape=(1, 2, 2), generator=gen)
    assert images.shape == (40_000, 1, 2, 2) and images.dtype == torch.float32
    class0 = np.concatenate(data[:2])
    got = images[:20_000].reshape(20_000, 4).double()
    np.testing.assert_allclose(got.mean(0).numpy(), class0.mean(0), atol=0.03)
    np.testing.assert_allclose(got.std(0).numpy(), class0.std(0), rtol=0.03)


def test_settings_checks_name_the_key() -> None:
    check_settings(DistillSection())
    bad = {"batch_mode": "everything", "net_update": "fedavg", "init": "real"}
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=f"distill.{key}={value!r} is unknown"):
            check_settings(DistillSection.model_construct(**{key: value}))
    with pytest.raises(ConfigError, match="unknown distance"):
        check_settings(DistillSection.model_construct(distance="l2"))
    with pytest.raises(ConfigError, match="unknown aggregator"):
        check_settings(DistillSection.model_construct(aggregator="mode"))


def test_ipc_above_a_class_total_is_rejected() -> None:
    check_class_totals(np.array([10, 0, 5]), ipc=5)
    with pytest.raises(ConfigError, match="ipc=6 exceeds the 5 images of class 2"):
        check_class_totals(np.array([10, 0, 5]), ipc=6)
