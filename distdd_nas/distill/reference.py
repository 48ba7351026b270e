"""Centralized Dataset Condensation as a reference: the DistDD loop over one client that holds
the data (benchmarks and tests compare with it; it needs data that in DistDD never leaves the
clients, so it is labelled as a reference wherever it is used)."""

from __future__ import annotations

from typing import Any

import numpy as np

from distdd_nas.data import ImageDataset
from distdd_nas.distill.client import class_gradients, class_stats
from distdd_nas.federation import ClientData, InProcessEngine


def centralized_engine(train: ImageDataset, indices: np.ndarray, **kwargs: Any) -> InProcessEngine:
    """An engine with one client holding ``indices`` of ``train``: run_distill on it is
    centralized DC (a reference for benchmarks and tests; it needs data that in DistDD
    never leaves the clients, so label it as a reference). ``kwargs`` go to InProcessEngine."""
    client = ClientData(
        cid=0,
        dataset=train,
        train_indices=np.sort(np.asarray(indices)),
        holdout_indices=np.zeros(0, dtype=np.int64),
    )
    tasks = {"class_gradients": class_gradients, "class_stats": class_stats}
    return InProcessEngine(clients=[client], tasks=tasks, **kwargs)


__all__ = ["centralized_engine"]
