"""Shared fixtures of the distillation tests: scikit-learn digits split over a few clients."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch

from distdd_nas.data import DatasetSplits, ImageDataset, load_dataset
from distdd_nas.federation import ClientData, InProcessEngine
from distdd_nas.federation.engine import ClientTask
from distdd_nas.models import ArchSpec
from distdd_nas.study import default_tasks

#: A tiny ConvNet for 8×8 digits: two blocks of width 8 (≈ 1.4k parameters).
TINY = ArchSpec(depth=2, width=8)


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded on a busy 2-core box (no idle-thread waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def digits() -> DatasetSplits:
    """scikit-learn digits (1347 train / 450 test, 8×8, 10 classes)."""
    return load_dataset("digits", seed=0)


def make_clients(train: ImageDataset, parts: Sequence[np.ndarray]) -> list[ClientData]:
    """Client views holding the given index arrays of ``train``."""
    return [
        ClientData(
            cid=i,
            dataset=train,
            train_indices=np.sort(np.asarray(p)),
            holdout_indices=np.zeros(0, dtype=np.int64),
        )
        for i, p in enumerate(parts)
    ]


def iid_parts(n: int, k: int, *, seed: int = 0) -> list[np.ndarray]:
    """``k`` random, equal-sized parts of ``range(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, k)]


def label_skew_parts(labels: np.ndarray, k: int) -> list[np.ndarray]:
    """Pathological split: client i gets the classes ≡ i (mod k) (clients miss classes)."""
    return [np.flatnonzero(labels % k == i) for i in range(k)]


def make_engine(
    train: ImageDataset,
    parts: Sequence[np.ndarray],
    tasks: dict[str, ClientTask] | None = None,
    **kwargs: object,
) -> InProcessEngine:
    """An in-process engine over the given parts with the default client tasks."""
    return InProcessEngine(
        clients=make_clients(train, parts),
        tasks=tasks if tasks is not None else default_tasks(),
        **kwargs,
    )  # type: ignore[arg-type]
