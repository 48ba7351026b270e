"""Build the federated world of a study: data, partition, label noise, client views.

This is the only place that turns the ``data``, ``partition`` and ``noise`` sections into
objects, so the in-process engine, the Flower ClientApp (which rebuilds one client from its
partition id) and every stage see exactly the same clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from distdd_nas.config import StudyConfig
from distdd_nas.data import (
    FederatedSplit,
    ImageDataset,
    NoiseRecord,
    apply_label_noise,
    load_dataset,
    make_partitioner,
)
from distdd_nas.federation.engine import ClientData
from distdd_nas.seeding import derive_seed


@dataclass(frozen=True, eq=False)
class Federation:
    """All clients of a study plus the server-side test set.

    ``train`` holds the labels as the clients see them (noisy where noise applies);
    ``clean_labels`` keeps the originals for diagnostics only — no algorithm reads them.
    """

    train: ImageDataset
    test: ImageDataset
    split: FederatedSplit
    holdout: FederatedSplit
    noise: NoiseRecord
    clean_labels: np.ndarray
    clients: list[ClientData]

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def class_counts(self) -> pd.DataFrame:
        """Per-client class counts of the clients' training splits (noisy labels)."""
        return self.split.class_counts(self.train.labels.numpy())


def build_federation(config: StudyConfig) -> Federation:
    """Load the dataset, partition it, apply label noise and create the client views."""
    seed = config.study.seed
    data = config.data
    splits = load_dataset(
        data.name,
        root=data.root,
        download=data.download,
        seed=derive_seed(seed, "data"),
        test_fraction=data.test_fraction,
        max_train=data.max_train,
    )
    part = config.partition
    partitioner = make_partitioner(
        part.method,
        num_clients=part.num_clients,
        alpha=part.alpha,
        min_size=part.min_size,
        classes_per_client=part.classes_per_client,
    )
    clean = splits.train.labels.numpy()
    full_split = partitioner.split(clean, seed=derive_seed(seed, "partition"))
    noisy, record = apply_label_noise(
        clean,
        full_split,
        kind=config.noise.kind,
        rate=config.noise.rate,
        client_fraction=config.noise.client_fraction,
        num_classes=splits.train.num_classes,
        seed=derive_seed(seed, "noise"),
    )
    train = splits.train.with_labels(torch.as_tensor(noisy, dtype=torch.long))
    if part.holdout_fraction > 0:
        split, holdout = full_split.holdout(
            part.holdout_fraction, seed=derive_seed(seed, "holdout")
        )
    else:
        split = full_split
        holdout = FederatedSplit(
            client_indices=tuple(np.empty(0, dtype=np.int64) for _ in full_split.client_indices),
            num_classes=full_split.num_classes,
        )
    clients = [
        ClientData(
            cid=cid,
            dataset=train,
            train_indices=split.client_indices[cid],
            holdout_indices=holdout.client_indices[cid],
        )
        for cid in range(split.num_clients)
    ]
    return Federation(
        train=train,
        test=splits.test,
        split=split,
        holdout=holdout,
        noise=record,
        clean_labels=clean,
        clients=clients,
    )
