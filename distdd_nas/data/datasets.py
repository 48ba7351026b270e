"""Image datasets by name, loaded offline from known places: :data:`DATASETS` and
:func:`load_dataset`, the one entry point the stages use.

Every loader returns :class:`~distdd_nas.data.images.DatasetSplits` of normalised float32
images (N×C×H×W) and int64 labels; clients and servers index into them instead of copying.
Sources:

* ``digits`` — scikit-learn's 1797 8×8 digits (ships with scikit-learn), loaded here. It has no
  test split, so a seeded stratified one is drawn and the normalisation comes from the train
  part.
* ``fashion_mnist`` / ``mnist`` / ``cifar10`` / ``svhn`` — torchvision's releases, found on
  disk by :mod:`distdd_nas.data.torchvision_sources` (which also holds their constants).

Nothing downloads unless ``download=True``; offline, that fails with one line saying how to get
the files. :func:`stratified_sample` draws the ``max_train`` subsample (and the search's server
holdout). The container and the dataset constants are re-exported here for callers that
import them from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from distdd_nas.data.images import DatasetSplits, ImageDataset, build_dataset
from distdd_nas.data.torchvision_sources import (
    CIFAR10_CLASSES,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    FASHION_MNIST_SYSTEM_DIRS,
    NORMALISATION,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_svhn,
)
from distdd_nas.errors import ConfigError
from distdd_nas.seeding import numpy_rng


def stratified_sample(labels: np.ndarray, size: int, *, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of exactly ``size`` examples drawn per class in proportion to the labels.

    Each class gets ``floor(size × share)`` examples; the few left over go to the classes with
    the largest remainders (ties to the lower class), so the total is exact and deterministic.
    """
    y = np.asarray(labels)
    if not 0 <= size <= len(y):
        raise ConfigError(f"sample size {size} is out of range; use 0 <= size <= {len(y)}")
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y) if len(y) else counts.astype(float)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: size - int(take.sum())]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def _digits(*, seed: int, test_fraction: float, **_: object) -> DatasetSplits:
    """scikit-learn digits with a seeded stratified test split and train-set normalisation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    test_size = round(test_fraction * len(labels))
    test_idx = stratified_sample(labels, test_size, rng=numpy_rng(seed, "digits", "test_split"))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    mean = (float(pixels[train_idx].mean()),)
    std = (float(pixels[train_idx].std()),)
    return DatasetSplits(
        train=build_dataset(
            "digits",
            pixels=pixels[train_idx],
            labels=labels[train_idx],
            classes=DIGIT_CLASSES,
            mean=mean,
            std=std,
        ),
        test=build_dataset(
            "digits",
            pixels=pixels[test_idx],
            labels=labels[test_idx],
            classes=DIGIT_CLASSES,
            mean=mean,
            std=std,
        ),
    )


#: Dataset loaders by name (``data.name``), called with the keyword arguments ``root`` (Path or
#: None), ``download``, ``seed``, ``test_fraction`` and ``system_dirs`` (Paths or None).
DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": _digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "svhn": load_svhn,
}

#: Image shape (channels, height, width) and class count of each dataset, known without reading
#: a file: the checks before the first stage build the reference model on them (keys: DATASETS).
IMAGE_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "svhn": ((3, 32, 32), 10),
}


def _check_arguments(name: str, *, test_fraction: float, max_train: int | None) -> None:
    """ConfigError for an unknown name or out-of-range numbers, before any file is read."""
    if name not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; set data.name to one of {', '.join(DATASETS)}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction={test_fraction} is out of range; use 0 < f < 1")
    if max_train is not None and max_train < 1:
        raise ConfigError(f"data.max_train={max_train} is out of range; use an integer >= 1")


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.25,
    max_train: int | None = None,
    system_dirs: Sequence[str | Path] | None = None,
) -> DatasetSplits:
    """Load a dataset by name, offline unless ``download`` is set; deterministic in ``seed``.

    Args:
        name: One of :data:`DATASETS`.
        root: Directory with the dataset files (flat or torchvision layout); ``None`` uses
            only the system directories (Fashion-MNIST) or the bundled data (digits).
        download: Let torchvision fetch missing files into ``root`` (needs the internet).
        seed: Seeds the digits test split and the ``max_train`` subsample.
        test_fraction: Share of digits held out as test set (the other datasets ship one).
        max_train: Keep a seeded stratified subsample of exactly this many training examples.
        system_dirs: Where system-wide copies are searched after ``root`` (default
            :data:`FASHION_MNIST_SYSTEM_DIRS` for Fashion-MNIST, none otherwise); ``()``
            disables the fallback.

    Raises:
        ConfigError: Unknown name or out-of-range argument.
        DataError: Files missing, corrupt, or not downloadable.
    """
    _check_arguments(name, test_fraction=test_fraction, max_train=max_train)
    path = Path(root).expanduser() if root is not None else None
    extra = None if system_dirs is None else tuple(Path(d) for d in system_dirs)
    splits = DATASETS[name](
        root=path, download=download, seed=seed, test_fraction=test_fraction, system_dirs=extra
    )
    if max_train is not None and max_train < len(splits.train):
        keep = stratified_sample(
            splits.train.labels.numpy(), max_train, rng=numpy_rng(seed, name, "max_train")
        )
        splits = DatasetSplits(train=splits.train.subset(keep), test=splits.test)
    return splits


__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "FASHION_MNIST_SYSTEM_DIRS",
    "IMAGE_SHAPES",
    "NORMALISATION",
    "DatasetSplits",
    "ImageDataset",
    "load_dataset",
    "stratified_sample",
]
