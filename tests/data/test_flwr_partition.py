"""``partition.library = "flwr_datasets"``: the split is Flower Datasets' own, and it means
what the hand-written split of the same method means.

The reference is flwr-datasets called directly, the way a Flower baseline calls it
(``FederatedDataset(shuffle=True, seed=s)`` shuffles the split, then the partitioner seeded
with ``s`` cuts it); the statistical test compares the adapter with the hand-written Dirichlet
at two concentrations, so a dropped or mistranslated ``alpha`` fails it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from distdd_nas.data import FlwrDatasetsPartitioner, make_partitioner
from distdd_nas.errors import DataError
from distdd_nas.seeding import derive_seed

fp = pytest.importorskip("flwr_datasets.partitioner")
datasets = pytest.importorskip("datasets")

NUM_CLASSES = 10
#: A study-like seed (``derive_seed(study.seed, "partition")``, 63 bits) and Flower's default.
SEEDS = [derive_seed(0, "partition"), 42]


def balanced(per_class: int = 200, *, seed: int = 0) -> np.ndarray:
    """Shuffled labels with ``per_class`` examples of each of 10 classes."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(NUM_CLASSES), per_class))


def skewed() -> np.ndarray:
    """Imbalanced labels (class c has 60 + 25c examples, 1725 in all), in random order."""
    labels = np.concatenate([np.full(60 + 25 * c, c) for c in range(NUM_CLASSES)])
    return np.random.default_rng(1).permutation(labels)


def flower_reference(partitioner: Any, labels: np.ndarray, *, seed: int) -> list[np.ndarray]:
    """The clients' sorted example indices as Flower Datasets gives them, called directly."""
    table = datasets.Dataset.from_dict({"label": labels, "row": np.arange(len(labels))})
    partitioner.dataset = table.shuffle(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return [
            np.sort(np.asarray(partitioner.load_partition(c)["row"][:]))
            for c in range(partitioner.num_partitions)
        ]


#: (our settings, the flwr-datasets partitioner a Flower baseline would write) per method.
CASES: dict[str, tuple[dict[str, Any], Callable[[int], Any]]] = {
    "dirichlet": (
        {"num_clients": 7, "alpha": 0.5, "min_size": 10},
        lambda seed: fp.DirichletPartitioner(
            num_partitions=7, partition_by="label", alpha=0.5, min_partition_size=10, seed=seed
        ),
    ),
    "shards": (  # 2000 examples, 10 shards: the baseline's num_shards_per_partition form
        {"num_clients": 5, "classes_per_client": 2},
        lambda seed: fp.ShardPartitioner(
            num_partitions=5, partition_by="label", num_shards_per_partition=2, seed=seed
        ),
    ),
    "iid": ({"num_clients": 7}, lambda seed: fp.IidPartitioner(num_partitions=7)),
}


@pytest.mark.parametrize("seed", SEEDS, ids=["study-seed", "seed42"])
@pytest.mark.parametrize("method", sorted(CASES))
def test_split_equals_flwr_datasets_called_directly(method: str, seed: int) -> None:
    settings, reference = CASES[method]
    labels = balanced()
    ours = make_partitioner(method, library="flwr_datasets", **settings).split(labels, seed=seed)
    theirs = flower_reference(reference(seed), labels, seed=seed)
    assert len(ours.client_indices) == len(theirs)
    for mine, flower in zip(ours.client_indices, theirs, strict=True):
        np.testing.assert_array_equal(mine, flower)


@pytest.mark.parametrize("labels", [balanced(), skewed()], ids=["balanced", "skewed"])
@pytest.mark.parametrize("method", sorted(CASES))
def test_every_example_assigned_exactly_once(method: str, labels: np.ndarray) -> None:
    """Also where the shard count does not divide N (skewed: 1725 examples, 10 shards)."""
    split = make_partitioner(method, library="flwr_datasets", **CASES[method][0]).split(
        labels, seed=3
    )
    for idx in split.client_indices:
        assert idx.dtype == np.int64 and idx.size > 0
        assert np.all(np.diff(idx) > 0), "indices must be sorted and unique"
    everything = np.sort(np.concatenate(split.client_indices))
    np.testing.assert_array_equal(everything, np.arange(len(labels)))


@pytest.mark.parametrize("method", sorted(CASES))
def test_same_seed_same_bytes_other_seed_other_split(method: str) -> None:
    labels = balanced()

    def raw(seed: int) -> bytes:
        partitioner = make_partitioner(method, library="flwr_datasets", **CASES[method][0])
        return b"|".join(i.tobytes() for i in partitioner.split(labels, seed=seed).client_indices)

    assert raw(5) == raw(5)
    assert raw(5) != raw(6)


def test_shards_give_each_client_its_classes_as_in_the_hand_written_split() -> None:
    """Balanced classes, one class per shard (10 shards of 200): exactly k classes each."""
    labels = balanced()
    for clients, k in ((10, 1), (5, 2)):
        split = make_partitioner(
            "shards", library="flwr_datasets", num_clients=clients, classes_per_client=k
        ).split(labels, seed=0)
        assert ((split.class_counts(labels) > 0).sum(axis=1) == k).all()
        assert split.sizes == (200 * k,) * clients


def mean_label_skew(library: str, alpha: float, labels: np.ndarray) -> float:
    """Mean over clients and 12 seeds of the total-variation distance between a client's
    label mix and the global one (0: iid; grows as alpha shrinks)."""
    overall = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    distances = []
    for seed in range(12):
        split = make_partitioner(
            "dirichlet", library=library, num_clients=10, alpha=alpha, min_size=10
        ).split(labels, seed=seed)
        counts = split.class_counts(labels).to_numpy().astype(float)
        mix = counts / counts.sum(axis=1, keepdims=True)
        distances.extend(0.5 * np.abs(mix - overall).sum(axis=1))
    return float(np.mean(distances))


def test_dirichlet_label_skew_matches_the_hand_written_one_at_each_alpha() -> None:
    """Same Dir(alpha) per class in both: the mean skew agrees at alpha 0.5 (about 0.44) and
    at alpha 5 (about 0.16), two values far apart, so a dropped alpha fails one of them."""
    labels = balanced(100)
    skew = {
        (lib, alpha): mean_label_skew(lib, alpha, labels)
        for lib in ("distdd", "flwr_datasets")
        for alpha in (0.5, 5.0)
    }
    for alpha in (0.5, 5.0):
        assert skew["flwr_datasets", alpha] == pytest.approx(skew["distdd", alpha], abs=0.04)
    assert skew["flwr_datasets", 0.5] > skew["flwr_datasets", 5.0] + 0.15


def test_the_adapter_mirrors_the_settings_it_wraps() -> None:
    partitioner = make_partitioner("dirichlet", library="flwr_datasets", num_clients=6, alpha=2.0)
    assert isinstance(partitioner, FlwrDatasetsPartitioner)
    assert partitioner.num_clients == 6 and partitioner.like.method == "dirichlet"


def test_an_impossible_flwr_split_is_a_data_error() -> None:
    """flwr-datasets gives up after 11 draws; the message says what to change."""
    partitioner = make_partitioner(
        "dirichlet", library="flwr_datasets", num_clients=10, alpha=0.5, min_size=150
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(DataError, match=r"flwr-datasets cannot make this dirichlet split"):
            partitioner.split(balanced(100), seed=0)
