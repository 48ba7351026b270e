"""Federated partitions: which training examples each client holds.

A :class:`Partitioner` is a small frozen value: it validates its arguments when constructed
(so a bad study file fails before any data is loaded), draws nothing until :meth:`split` is
called, and then draws only from a generator derived from the caller's seed. Every index is
assigned to exactly one client. Non-iid settings are first-class: Dirichlet label skew,
pathological label shards, and quantity (size) skew.

``partition.library = "flwr_datasets"`` hands ``iid``, ``dirichlet`` and ``shards`` to the
partitioners of Flower Datasets (:class:`FlwrDatasetsPartitioner`), so a split means what it
means in Flower baselines; the default ``"distdd"`` keeps the hand-written ones below, whose
splits the committed evidence (``bench/data``) was measured on.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import numbers
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from distdd_nas.errors import ConfigError, DataError, MissingDependencyError
from distdd_nas.seeding import numpy_rng

log = logging.getLogger(__name__)


def _as_label_array(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Labels as a 1-D int64 NumPy array with no negative values."""
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise DataError(
            f"labels must be a 1-D integer array, got shape {y.shape} and dtype {y.dtype}; "
            "pass the dataset's label vector"
        )
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise DataError(f"labels contain the negative value {y.min()}; use labels 0..C-1")
    return y


@dataclass(frozen=True, eq=False)
class FederatedSplit:
    """One sorted int64 index array into the training set per client.

    The split only holds indices: clients are views on one shared dataset, never copies.
    """

    client_indices: tuple[np.ndarray, ...]
    num_classes: int

    @property
    def num_clients(self) -> int:
        """Number of clients (including clients that happen to hold no example)."""
        return len(self.client_indices)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of examples per client."""
        return tuple(len(idx) for idx in self.client_indices)

    def class_counts(self, labels: np.ndarray | torch.Tensor) -> pd.DataFrame:
        """Client × class table of example counts.

        Args:
            labels: Labels of the whole training set the indices point into.

        Returns:
            Integer DataFrame indexed by ``client`` (0..n-1) with columns ``0..num_classes-1``.
        """
        y = _as_label_array(labels)
        if y.size and y.max() >= self.num_classes:
            raise DataError(
                f"label {y.max()} does not fit a split of {self.num_classes} classes; pass the "
                "labels of the dataset this split was made for"
            )
        rows = []
        for cid, idx in enumerate(self.client_indices):
            if idx.size and idx.max() >= len(y):
                raise DataError(
                    f"client {cid} holds index {idx.max()} but there are only {len(y)} labels; "
                    "pass the labels of the dataset this split was made for"
                )
            rows.append(np.bincount(y[idx], minlength=self.num_classes))
        table = np.stack(rows) if rows else np.zeros((0, self.num_classes), dtype=np.int64)
        frame = pd.DataFrame(table.astype(np.int64), columns=list(range(self.num_classes)))
        frame.index.name = "client"
        return frame

    def holdout(self, fraction: float, *, seed: int) -> tuple[FederatedSplit, FederatedSplit]:
        """Split every client's examples into (train part, held-out part), seeded per client.

        A client of n examples holds out ``round(fraction × n)`` of them, but at least one when
        ``fraction > 0`` and n ≥ 2 (so every client can score a model locally) and never all of
        them (every client keeps at least one training example).

        Raises:
            ConfigError: ``fraction`` outside ``0 <= fraction < 1``.
        """
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(
                f"partition.holdout_fraction={fraction} is out of range; use 0 <= fraction < 1"
            )
        train, held = [], []
        for cid, idx in enumerate(self.client_indices):
            k = _holdout_size(fraction, len(idx))
            perm = numpy_rng(seed, "holdout", cid).permutation(idx)
            held.append(np.sort(perm[:k]))
            train.append(np.sort(perm[k:]))
        return (
            FederatedSplit(client_indices=tuple(train), num_classes=self.num_classes),
            FederatedSplit(client_indices=tuple(held), num_classes=self.num_classes),
        )


def _holdout_size(fraction: float, n: int) -> int:
    """How many of a client's n examples to hold out (see FederatedSplit.holdout)."""
    if fraction == 0.0 or n < 2:
        return 0
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def _require_int(name: str, value: object, *, minimum: int) -> None:
    """ConfigError unless ``value`` is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid; use an integer >= {minimum}")


def _require_positive(name: str, value: object) -> None:
    """ConfigError unless ``value`` is a finite real number > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        raise ConfigError(f"{name}={value!r} is invalid; use a finite number > 0")


@dataclass(frozen=True, kw_only=True)
class Partitioner(ABC):
    """Assigns every training example to exactly one of ``num_clients`` clients."""

    num_clients: int

    #: Name used by :func:`make_partitioner` and as the name of the random stream.
    method: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        _require_int("num_clients", self.num_clients, minimum=1)

    def split(
        self, labels: np.ndarray | torch.Tensor, *, seed: int, num_classes: int | None = None
    ) -> FederatedSplit:
        """Partition the examples with the given labels over the clients.

        Args:
            labels: 1-D integer labels of the whole training set.
            seed: Seed of the partition; the same seed gives the same split.
            num_classes: Number of classes; default ``max(labels) + 1``.

        Raises:
            DataError: Fewer examples than clients, or the draw cannot satisfy the constraints.
        """
        y = _as_label_array(labels)
        if len(y) < self.num_clients:
            raise DataError(
                f"{len(y)} examples cannot be spread over {self.num_clients} clients; "
                "lower partition.num_clients or use more data"
            )
        classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
        if y.max() >= classes:
            raise DataError(
                f"label {y.max()} does not fit num_classes={classes}; pass the "
                "dataset's number of classes"
            )
        parts = self._assign(y, num_classes=classes, seed=seed)
        indices = tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
        log.debug("%s split: client sizes %s", self.method, [len(p) for p in indices])
        return FederatedSplit(client_indices=indices, num_classes=classes)

    @abstractmethod
    def _assign(self, labels: np.ndarray, *, num_classes: int, seed: int) -> list[np.ndarray]:
        """One index array per client; together they hold every index exactly once."""

    def _stream(self, seed: int) -> np.random.Generator:
        """The generator a hand-written partitioner draws from: the stream named after its
        method, so two methods under one seed draw independently."""
        return numpy_rng(seed, "partition", self.method)


@dataclass(frozen=True, kw_only=True)
class IidPartitioner(Partitioner):
    """Uniformly random clients of equal size (sizes differ by at most one)."""

    method: ClassVar[str] = "iid"

    def _assign(self, labels: np.ndarray, *, num_classes: int, seed: int) -> list[np.ndarray]:
        rng = self._stream(seed)
        return list(np.array_split(rng.permutation(len(labels)), self.num_clients))


@dataclass(frozen=True, kw_only=True)
class DirichletPartitioner(Partitioner):
    """Label skew: for each class, the shares of the clients are drawn from Dir(alpha).

    Small ``alpha`` gives each client few classes (alpha → 0: one class per client); large
    ``alpha`` approaches an iid split. The whole draw is repeated until every client holds at
    least ``min_size`` examples, at most ``max_tries`` times.
    """

    alpha: float
    min_size: int = 10
    max_tries: int = 100

    method: ClassVar[str] = "dirichlet"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive("alpha", self.alpha)
        _require_int("min_size", self.min_size, minimum=0)
        _require_int("max_tries", self.max_tries, minimum=1)

    def _assign(self, labels: np.ndarray, *, num_classes: int, seed: int) -> list[np.ndarray]:
        rng = self._stream(seed)
        n = self.num_clients
        if self.min_size * n > len(labels):
            raise DataError(
                f"min_size={self.min_size} × {n} clients needs more than the {len(labels)} "
                "examples; lower partition.min_size or partition.num_clients"
            )
        by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
        for attempt in range(1, self.max_tries + 1):
            parts = self._draw(by_class, rng)
            smallest = min(len(p) for p in parts)
            if smallest >= self.min_size:
                return parts
            log.debug(
                "dirichlet draw %d: smallest client %d < %d", attempt, smallest, self.min_size
            )
        raise DataError(
            f"no Dirichlet(alpha={self.alpha}) draw in {self.max_tries} tries gave all {n} "
            f"clients >= {self.min_size} examples; lower partition.min_size or raise "
            "partition.alpha"
        )

    def _draw(self, by_class: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """One unconstrained draw: each class cut into client chunks by Dir(alpha) shares."""
        chunks: list[list[np.ndarray]] = [[] for _ in range(self.num_clients)]
        for idx in by_class:
            shares = rng.dirichlet(np.full(self.num_clients, self.alpha))
            cuts = np.floor(np.cumsum(shares)[:-1] * len(idx) + 0.5).astype(np.int64)
            for cid, chunk in enumerate(np.split(rng.permutation(idx), cuts)):
                chunks[cid].append(chunk)
        return [np.concatenate(c) for c in chunks]


@dataclass(frozen=True, kw_only=True)
class ShardPartitioner(Partitioner):
    """Pathological non-iid (McMahan et al.): sort by label, cut into equal shards, deal them.

    The examples are shuffled within each class, sorted by label and cut into
    ``num_clients × classes_per_client`` shards; each client gets ``classes_per_client``
    random shards. With balanced classes whose size is a multiple of the shard size, every
    client holds at most ``classes_per_client`` classes.
    """

    classes_per_client: int

    method: ClassVar[str] = "shards"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_int("classes_per_client", self.classes_per_client, minimum=1)

    def _assign(self, labels: np.ndarray, *, num_classes: int, seed: int) -> list[np.ndarray]:
        rng = self._stream(seed)
        total = self.num_clients * self.classes_per_client
        if total > len(labels):
            raise DataError(
                f"{total} shards (num_clients × classes_per_client) exceed the {len(labels)} "
                "examples; lower partition.num_clients or partition.classes_per_client"
            )
        shuffled = rng.permutation(len(labels))
        order = shuffled[np.argsort(labels[shuffled], kind="stable")]
        shards = np.array_split(order, total)
        deal = rng.permutation(total).reshape(self.num_clients, self.classes_per_client)
        return [np.concatenate([shards[s] for s in row]) for row in deal]


@dataclass(frozen=True, kw_only=True)
class QuantitySkewPartitioner(Partitioner):
    """Size skew: client shares of the data ~ Dir(alpha), labels iid; every client gets ≥ 1."""

    alpha: float

    method: ClassVar[str] = "quantity"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive("alpha", self.alpha)

    def _assign(self, labels: np.ndarray, *, num_classes: int, seed: int) -> list[np.ndarray]:
        rng = self._stream(seed)
        n, total = self.num_clients, len(labels)
        shares = rng.dirichlet(np.full(n, self.alpha))
        sizes = 1 + rng.multinomial(total - n, shares / shares.sum())
        return list(np.split(rng.permutation(total), np.cumsum(sizes)[:-1]))


@dataclass(frozen=True, kw_only=True)
class FlwrDatasetsPartitioner(Partitioner):
    """The settings of a hand-written partitioner (``like``), split by Flower Datasets.

    ``split(labels, seed=s)`` is the split a Flower baseline gets from
    ``FederatedDataset(..., shuffle=True, seed=s)`` with the flwr-datasets partitioner of the
    same method seeded with ``s``: the examples are shuffled (``datasets.Dataset.shuffle``),
    then partitioned. ``iid`` → ``IidPartitioner`` (contiguous slices of the shuffled data);
    ``dirichlet`` → ``DirichletPartitioner`` (``alpha``, ``min_partition_size = min_size``,
    no self-balancing, at most 11 draws); ``shards`` → ``ShardPartitioner`` with
    ``num_clients × classes_per_client`` shards of ``ceil(N / shards)`` sorted examples, the
    last one smaller, so no example is dropped (for N a multiple of the shard count this is
    ``num_shards_per_partition = classes_per_client`` exactly). ``quantity`` has none:
    flwr-datasets' size partitioners (linear, square, exponential) draw no random sizes.
    """

    like: Partitioner
    num_clients: int = field(init=False)

    method: ClassVar[str] = "flwr_datasets"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_clients", self.like.num_clients)
        super().__post_init__()
        if self.like.method not in FLWR_METHODS:
            raise ConfigError(
                f"partition.method={self.like.method!r} has no flwr-datasets counterpart; use "
                f'one of {", ".join(FLWR_METHODS)} or partition.library = "distdd"'
            )
        if importlib.util.find_spec("flwr_datasets") is None:
            raise MissingDependencyError(
                'partition.library = "flwr_datasets" needs flwr-datasets; install the flower '
                "extra (pip install -e '.[flower]') or use partition.library = \"distdd\""
            )

    def _assign(self, labels: np.ndarray, *, num_classes: int, seed: int) -> list[np.ndarray]:
        import datasets  # deferred: only this library choice needs HF datasets (seconds)

        index = "distdd_index"  # which training example a row is, through shuffle and sort
        table = datasets.Dataset.from_dict({"label": labels, index: np.arange(len(labels))})
        flwr = self._counterpart(num_examples=len(labels), seed=seed)
        flwr.dataset = table.shuffle(seed=seed)
        try:
            with warnings.catch_warnings():  # pyarrow >= 25 vs datasets' sort: not the user's
                warnings.filterwarnings("ignore", "Specifying null_placement", FutureWarning)
                return [
                    np.asarray(flwr.load_partition(c)[index][:]) for c in range(self.num_clients)
                ]
        except ValueError as err:
            raise DataError(
                f"flwr-datasets cannot make this {self.like.method} split ({err}); lower "
                "partition.num_clients or partition.min_size, or raise partition.alpha"
            ) from None

    def _counterpart(self, *, num_examples: int, seed: int) -> Any:
        """The flwr-datasets partitioner with ``like``'s settings (no dataset assigned yet)."""
        from flwr_datasets import partitioner as fp

        like, n = self.like, self.like.num_clients
        if isinstance(like, DirichletPartitioner):
            return fp.DirichletPartitioner(
                num_partitions=n,
                partition_by="label",
                alpha=float(like.alpha),
                min_partition_size=like.min_size,
                self_balancing=False,
                shuffle=False,  # order within a client only; indices are sorted anyway
                seed=seed,
            )
        if isinstance(like, ShardPartitioner):
            return fp.ShardPartitioner(
                num_partitions=n,
                partition_by="label",
                shard_size=-(-num_examples // (n * like.classes_per_client)),
                keep_incomplete_shard=True,
                shuffle=False,
                seed=seed,
            )
        return fp.IidPartitioner(num_partitions=n)


#: Partitioners by name (``partition.method``; each class's ``method``).
PARTITIONERS: dict[str, type[Partitioner]] = {
    cls.method: cls
    for cls in (IidPartitioner, DirichletPartitioner, ShardPartitioner, QuantitySkewPartitioner)
}

#: Methods Flower Datasets has a counterpart for (see :class:`FlwrDatasetsPartitioner`).
FLWR_METHODS = ("iid", "dirichlet", "shards")

#: Where ``partition.library`` may take the partitioners from.
LIBRARIES = ("distdd", "flwr_datasets")


def make_partitioner(
    method: str,
    *,
    library: str = "distdd",
    num_clients: int,
    alpha: float = 0.5,
    min_size: int = 10,
    classes_per_client: int = 2,
) -> Partitioner:
    """Partitioner by name (a key of :data:`PARTITIONERS`): ``iid`` | ``dirichlet`` | ``shards``
    | ``quantity``.

    Arguments a method does not use are ignored (``alpha`` is read by dirichlet and quantity,
    ``min_size`` by dirichlet, ``classes_per_client`` by shards). ``library="flwr_datasets"``
    wraps the partitioner in :class:`FlwrDatasetsPartitioner`.

    Raises:
        ConfigError: Unknown method or library, invalid argument, or a method flwr-datasets
            has no counterpart for.
        MissingDependencyError: ``library="flwr_datasets"`` without flwr-datasets installed.
    """
    if library not in LIBRARIES:
        raise ConfigError(
            f"unknown partition library {library!r}; set partition.library to one of "
            f"{', '.join(LIBRARIES)}"
        )
    cls = PARTITIONERS.get(method)
    if cls is None:
        raise ConfigError(
            f"unknown partition method {method!r}; set partition.method to one of "
            f"{', '.join(PARTITIONERS)}"
        )
    options = {"alpha": alpha, "min_size": min_size, "classes_per_client": classes_per_client}
    used = {k: v for k, v in options.items() if k in {f.name for f in fields(cls)}}
    partitioner = cls(num_clients=num_clients, **used)
    return FlwrDatasetsPartitioner(like=partitioner) if library == "flwr_datasets" else partitioner
