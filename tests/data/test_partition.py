"""Partitioners: one contract suite over every implementation, then each one's own promise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from distdd_nas.config import StudyConfig, fingerprint, from_dict
from distdd_nas.data import (
    DirichletPartitioner,
    FederatedSplit,
    IidPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    make_partitioner,
)
from distdd_nas.errors import ConfigError, DataError, MissingDependencyError

NUM_CLASSES = 10


def balanced_labels(per_class: int = 1000, *, seed: int = 0) -> np.ndarray:
    """Shuffled labels with ``per_class`` examples of each of 10 classes (10k by default)."""
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    return np.random.default_rng(seed).permutation(labels)


def skewed_labels() -> np.ndarray:
    """Imbalanced labels: class c has 100 + 50c examples, in random order."""
    labels = np.concatenate([np.full(100 + 50 * c, c) for c in range(NUM_CLASSES)])
    return np.random.default_rng(1).permutation(labels)


def proportions(split: FederatedSplit, labels: np.ndarray) -> np.ndarray:
    """Client × class label proportions."""
    counts = split.class_counts(labels).to_numpy().astype(float)
    return counts / counts.sum(axis=1, keepdims=True)


PARTITIONERS: dict[str, Callable[[], Partitioner]] = {
    "iid": lambda: IidPartitioner(num_clients=7),
    "dirichlet": lambda: DirichletPartitioner(num_clients=7, alpha=0.5),
    "shards": lambda: ShardPartitioner(num_clients=7, classes_per_client=2),
    "quantity": lambda: QuantitySkewPartitioner(num_clients=7, alpha=0.5),
}


# ---------------------------------------------------------------------------------------------
# contract: every partitioner
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=sorted(PARTITIONERS))
def partitioner(request: pytest.FixtureRequest) -> Partitioner:
    return PARTITIONERS[request.param]()


@pytest.mark.parametrize(
    "labels", [balanced_labels(), skewed_labels()], ids=["balanced", "skewed"]
)
def test_every_index_assigned_exactly_once(partitioner: Partitioner, labels: np.ndarray) -> None:
    split = partitioner.split(labels, seed=3)
    assert split.num_clients == 7
    assert split.num_classes == NUM_CLASSES
    for idx in split.client_indices:
        assert idx.dtype == np.int64
        assert np.all(np.diff(idx) > 0), "indices must be sorted and unique"
    everything = np.sort(np.concatenate(split.client_indices))
    np.testing.assert_array_equal(everything, np.arange(len(labels)))


def test_same_seed_same_split_other_seed_other_split(partitioner: Partitioner) -> None:
    labels = balanced_labels()
    first, again = partitioner.split(labels, seed=5), partitioner.split(labels, seed=5)
    other = partitioner.split(labels, seed=6)
    for a, b in zip(first.client_indices, again.client_indices, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(first.client_indices, other.client_indices, strict=True)
    )


def test_torch_labels_give_the_same_split(partitioner: Partitioner) -> None:
    labels = balanced_labels(100)
    from_numpy = partitioner.split(labels, seed=0)
    from_torch = partitioner.split(torch.as_tensor(labels), seed=0)
    for a, b in zip(from_numpy.client_indices, from_torch.client_indices, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fewer_examples_than_clients_is_a_data_error(partitioner: Partitioner) -> None:
    with pytest.raises(DataError, match=r"cannot be spread over 7 clients.*num_clients"):
        partitioner.split(np.arange(5) % 2, seed=0)


def test_labels_must_be_one_dimensional_non_negative_integers(partitioner: Partitioner) -> None:
    with pytest.raises(DataError, match="1-D integer"):
        partitioner.split(np.zeros((10, 2), dtype=np.int64), seed=0)
    with pytest.raises(DataError, match="1-D integer"):
        partitioner.split(np.linspace(0, 1, 50), seed=0)
    with pytest.raises(DataError, match="negative"):
        partitioner.split(np.arange(50) - 1, seed=0)


def test_explicit_num_classes_is_kept_and_checked() -> None:
    labels = np.arange(100) % 3
    assert IidPartitioner(num_clients=2).split(labels, seed=0, num_classes=10).num_classes == 10
    with pytest.raises(DataError, match="num_classes=2"):
        IidPartitioner(num_clients=2).split(labels, seed=0, num_classes=2)


# ---------------------------------------------------------------------------------------------
# Dirichlet
# ---------------------------------------------------------------------------------------------


def test_dirichlet_tiny_alpha_puts_each_class_on_one_client() -> None:
    labels = balanced_labels()
    split = DirichletPartitioner(num_clients=10, alpha=1e-3, min_size=0).split(labels, seed=0)
    counts = split.class_counts(labels).to_numpy()
    dominant_client_share = counts.max(axis=0) / counts.sum(axis=0)  # per class
    assert dominant_client_share.mean() > 0.95
    # so a client holds only whole classes: about one (client, class) cell per class is used
    assert (counts > 0).sum() <= 12


def test_dirichlet_huge_alpha_is_close_to_iid() -> None:
    labels = skewed_labels()
    split = DirichletPartitioner(num_clients=10, alpha=1e4).split(labels, seed=0)
    overall = np.bincount(labels) / len(labels)
    assert np.abs(proportions(split, labels) - overall).max() < 0.05


def test_dirichlet_small_alpha_is_far_from_iid() -> None:
    labels = balanced_labels()
    split = DirichletPartitioner(num_clients=10, alpha=0.1).split(labels, seed=0)
    assert np.abs(proportions(split, labels) - 0.1).max() > 0.3


def test_dirichlet_min_size_is_respected() -> None:
    labels = balanced_labels()
    loose = DirichletPartitioner(num_clients=20, alpha=0.3, min_size=0).split(labels, seed=1)
    assert min(loose.sizes) < 150, "the constraint below would not bind: pick another seed"
    tight = DirichletPartitioner(num_clients=20, alpha=0.3, min_size=150).split(labels, seed=1)
    assert min(tight.sizes) >= 150


def test_dirichlet_min_size_above_the_data_fails_at_once() -> None:
    partitioner = DirichletPartitioner(num_clients=10, alpha=0.5, min_size=11)
    with pytest.raises(DataError, match=r"min_size=11 × 10 clients.*lower partition.min_size"):
        partitioner.split(balanced_labels(10), seed=0)


def test_dirichlet_unreachable_min_size_fails_after_max_tries() -> None:
    partitioner = DirichletPartitioner(num_clients=10, alpha=1e-3, min_size=1, max_tries=3)
    with pytest.raises(
        DataError, match=r"in 3 tries.*lower partition.min_size or raise partition.alpha"
    ):
        partitioner.split(balanced_labels(), seed=0)


# ---------------------------------------------------------------------------------------------
# shards, iid, quantity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes_per_client", [1, 2, 5])
def test_shards_give_each_client_at_most_k_classes(classes_per_client: int) -> None:
    labels = balanced_labels()
    partitioner = ShardPartitioner(num_clients=10, classes_per_client=classes_per_client)
    counts = partitioner.split(labels, seed=2).class_counts(labels).to_numpy()
    assert (counts > 0).sum(axis=1).max() <= classes_per_client
    assert set(counts.sum(axis=1)) == {1000}


def test_shards_need_at_least_one_example_per_shard() -> None:
    with pytest.raises(DataError, match="classes_per_client"):
        ShardPartitioner(num_clients=10, classes_per_client=5).split(np.arange(40) % 4, seed=0)


def test_iid_sizes_differ_by_at_most_one_and_follow_the_global_mix() -> None:
    labels = skewed_labels()
    split = IidPartitioner(num_clients=7).split(labels, seed=0)
    assert max(split.sizes) - min(split.sizes) <= 1
    overall = np.bincount(labels) / len(labels)
    assert np.abs(proportions(split, labels) - overall).max() < 0.05


def test_quantity_skew_varies_sizes_and_keeps_every_client() -> None:
    labels = balanced_labels()
    sizes = QuantitySkewPartitioner(num_clients=10, alpha=0.5).split(labels, seed=0).sizes
    assert max(sizes) > 3 * min(sizes)
    extreme = QuantitySkewPartitioner(num_clients=10, alpha=1e-3).split(labels, seed=0).sizes
    assert min(extreme) >= 1
    assert sum(extreme) == len(labels)


# ---------------------------------------------------------------------------------------------
# construction failures and the factory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: IidPartitioner(num_clients=0), r"num_clients=0 .*integer >= 1"),
        (lambda: IidPartitioner(num_clients=2.5), r"num_clients=2.5 .*>= 1"),  # type: ignore[arg-type]
        (lambda: IidPartitioner(num_clients=True), r"num_clients=True .*integer >= 1"),
        (lambda: DirichletPartitioner(num_clients=3, alpha=0), r"alpha=0 .*> 0"),
        (lambda: DirichletPartitioner(num_clients=3, alpha=-1.0), r"alpha=-1.0 .*> 0"),
        (lambda: DirichletPartitioner(num_clients=3, alpha=float("nan")), r"alpha=nan .*finite"),
        (lambda: DirichletPartitioner(num_clients=3, alpha=float("inf")), r"alpha=inf .*finite"),
        (lambda: DirichletPartitioner(num_clients=3, alpha=1, min_size=-1), r"min_size=-1 .*>= 0"),
        (lambda: DirichletPartitioner(num_clients=3, alpha=1, max_tries=0), r"max_tries=0 .*>= 1"),
        (lambda: DirichletPartitioner(num_clients=-2, alpha=1), r"num_clients=-2 .*>= 1"),
        (
            lambda: ShardPartitioner(num_clients=3, classes_per_client=0),
            r"classes_per_client=0 .*>= 1",
        ),
        (lambda: QuantitySkewPartitioner(num_clients=3, alpha=0.0), r"alpha=0.0 .*> 0"),
        (
            lambda: make_partitioner("bogus", num_clients=3),
            r"unknown partition method 'bogus'.*iid, dirichlet, shards, quantity",
        ),
        (lambda: make_partitioner("dirichlet", num_clients=3, alpha=0), r"alpha=0 .*> 0"),
    ],
)
def test_invalid_arguments_fail_at_construction(
    make: Callable[[], Partitioner], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_make_partitioner_builds_each_method_with_its_arguments() -> None:
    kwargs: dict[str, Any] = {
        "num_clients": 4,
        "alpha": 0.3,
        "min_size": 2,
        "classes_per_client": 3,
    }
    assert make_partitioner("iid", **kwargs) == IidPartitioner(num_clients=4)
    assert make_partitioner("dirichlet", **kwargs) == DirichletPartitioner(
        num_clients=4, alpha=0.3, min_size=2
    )
    assert make_partitioner("shards", **kwargs) == ShardPartitioner(
        num_clients=4, classes_per_client=3
    )
    assert make_partitioner("quantity", **kwargs) == QuantitySkewPartitioner(
        num_clients=4, alpha=0.3
    )


# ---------------------------------------------------------------------------------------------
# partition.library: the choice itself (flwr-datasets' splits: test_flwr_partition.py)
# ---------------------------------------------------------------------------------------------


def test_an_unknown_library_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown partition library 'flower'.*flwr_datasets"):
        make_partitioner("dirichlet", library="flower", num_clients=4)


def test_quantity_has_no_flwr_datasets_counterpart() -> None:
    with pytest.raises(ConfigError, match=r"'quantity' has no flwr-datasets counterpart"):
        make_partitioner("quantity", library="flwr_datasets", num_clients=4)


def test_flwr_datasets_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)  # find_spec: not installed
    with pytest.raises(MissingDependencyError, match=r"install the flower extra"):
        make_partitioner("dirichlet", library="flwr_datasets", num_clients=4)


def test_the_default_library_leaves_dumps_and_fingerprints_as_they_were() -> None:
    """Fingerprints and ground-truth identities made before ``library`` existed stay valid;
    choosing flwr-datasets is a different partition, so a different fingerprint."""
    default, flower = StudyConfig(), from_dict({"partition": {"library": "flwr_datasets"}})
    assert "library" not in default.to_dict()["partition"]
    assert flower.to_dict()["partition"]["library"] == "flwr_datasets"
    assert from_dict(default.to_dict()) == default and from_dict(flower.to_dict()) == flower
    assert fingerprint(default, ["partition"]) != fingerprint(flower, ["partition"])


# ---------------------------------------------------------------------------------------------
# FederatedSplit: class counts and holdout
# ---------------------------------------------------------------------------------------------


def hand_split() -> tuple[np.ndarray, FederatedSplit]:
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0])
    split = FederatedSplit(
        client_indices=(np.array([0, 3, 6]), np.array([1, 2]), np.array([4, 5, 7])), num_classes=4
    )
    return labels, split


def test_class_counts_match_a_hand_computed_table() -> None:
    labels, split = hand_split()
    expected = pd.DataFrame(
        [[3, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]], columns=[0, 1, 2, 3], dtype=np.int64
    )
    expected.index.name = "client"
    pd.testing.assert_frame_equal(split.class_counts(labels), expected)
    pd.testing.assert_frame_equal(split.class_counts(torch.as_tensor(labels)), expected)


def test_class_counts_reject_labels_of_another_dataset() -> None:
    labels, split = hand_split()
    with pytest.raises(DataError, match="does not fit a split of 4 classes"):
        split.class_counts(np.array([0, 1, 2, 0, 1, 2, 0, 4]))
    with pytest.raises(DataError, match="only 5 labels"):
        split.class_counts(labels[:5])


def test_holdout_is_disjoint_complete_and_seeded() -> None:
    labels = balanced_labels()
    split = DirichletPartitioner(num_clients=8, alpha=0.5).split(labels, seed=0)
    train, held = split.holdout(0.2, seed=4)
    for full, t, h in zip(
        split.client_indices, train.client_indices, held.client_indices, strict=True
    ):
        assert np.intersect1d(t, h).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([t, h])), full)
        assert len(h) == int(np.floor(0.2 * len(full) + 0.5))
        assert np.all(np.diff(t) > 0) and np.all(np.diff(h) > 0)
    again = split.holdout(0.2, seed=4)[1]
    other = split.holdout(0.2, seed=5)[1]
    assert all(
        np.array_equal(a, b)
        for a, b in zip(held.client_indices, again.client_indices, strict=True)
    )
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(held.client_indices, other.client_indices, strict=True)
    )


def test_holdout_keeps_a_train_example_and_holds_one_out_when_it_can() -> None:
    split = FederatedSplit(
        client_indices=(np.array([0]), np.array([1, 2]), np.arange(3, 23)), num_classes=2
    )
    train, held = split.holdout(0.9, seed=0)
    assert train.sizes == (1, 1, 2)
    assert held.sizes == (0, 1, 18)
    train, held = split.holdout(0.01, seed=0)
    assert held.sizes == (0, 1, 1)
    train, held = split.holdout(0.0, seed=0)
    assert held.sizes == (0, 0, 0) and train.sizes == split.sizes


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_holdout_fraction_out_of_range(fraction: float) -> None:
    _, split = hand_split()
    with pytest.raises(ConfigError, match=r"holdout_fraction.*0 <= fraction < 1"):
        split.holdout(fraction, seed=0)
