"""A study turned into objects, once per process: the federation, settings, space, engine.

:class:`Study` is the one place that reads a :class:`~distdd_nas.config.StudyConfig` and builds
what the stages use: the federated world (dataset, partition, label noise, client views — built
at most once, on first use), the reference architecture, FedAvg and proxy-training settings, the
candidate factory, the search space and in-process engines over the clients. Stages take a
``Study``; so do the Flower apps, which rebuild one from the config carried in the run config.

The client tasks every engine can run are listed here too (:func:`default_tasks`): they are
algorithm code (DistDD and FedAvg), and the transport layer must not import algorithms.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.data import (
    FederatedSplit,
    ImageDataset,
    NoiseRecord,
    apply_label_noise,
    load_dataset,
    make_partitioner,
)
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg import FedAvgSettings
from distdd_nas.federation import ClientData, ClientTask, Engine, InProcessEngine, make_aggregator
from distdd_nas.federation.faults import Faults
from distdd_nas.federation.quorum import Quorum
from distdd_nas.models import ArchSpec, build_model, count_parameters
from distdd_nas.resources import SPACES, shipped_dir, shipped_file, shipped_names
from distdd_nas.search.candidate import CandidateFactory
from distdd_nas.search.objective import split_server_holdout
from distdd_nas.search.space import SearchSpace
from distdd_nas.seeding import derive_seed
from distdd_nas.training import TrainSettings

log = logging.getLogger(__name__)

#: Search spaces shipped with the package (``search.space`` may name one by its stem).
SPACES_DIR = shipped_dir(SPACES)


def default_tasks(config: StudyConfig | None = None) -> dict[str, ClientTask]:
    """Name → client function for every task of distdd-nas (what a ClientApp can run), with
    the failing and Byzantine clients of ``config.federation`` injected (:func:`faults_of`).

    The Flower apps call it with the run's study config, so both engines run the same faults.
    """
    from distdd_nas.distill.client import class_gradients, class_stats
    from distdd_nas.fedavg.tasks import evaluate, local_train

    tasks: dict[str, ClientTask] = {
        "class_gradients": class_gradients,
        "class_stats": class_stats,
        "local_train": local_train,
        "evaluate": evaluate,
    }
    if config is None:
        return tasks
    return faults_of(config).wrap(tasks, num_clients=config.partition.num_clients)


def faults_of(config: StudyConfig) -> Faults:
    """The client faults a study simulates (``[federation]``), seeded by the study seed."""
    fed = config.federation
    return Faults(
        failure_rate=fed.failure_rate,
        byzantine_fraction=fed.byzantine_fraction,
        byzantine_kind=fed.byzantine_kind,
        byzantine_scale=fed.byzantine_scale,
        seed=config.study.seed,
    )


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
        library=part.library,
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


def load_space(name: str) -> SearchSpace:
    """A search space by path, by name under ``./search_spaces/``, or by the name of one
    shipped with the package (:mod:`distdd_nas.resources`; ``smoke``, ``smoke.toml``).

    Raises:
        ConfigError: No such file; the message lists the shipped spaces.
    """
    for candidate in (Path(name), Path("search_spaces") / f"{name}.toml"):
        if candidate.is_file():
            return SearchSpace.load(candidate)
    shipped = shipped_file(SPACES, name)
    if shipped is not None:
        return SearchSpace.load(shipped)
    known = ", ".join(shipped_names(SPACES))
    raise ConfigError(f"search space {name!r} not found; use a path or one of: {known}")


class Study:
    """Objects of one study, each built on first use and then shared by every stage.

    Example:
        >>> from distdd_nas.config import StudyConfig, fingerprint
        >>> study = Study(StudyConfig())
        >>> study.reference.family, study.fedavg_settings.rounds
        ('convnet', 20)
    """

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        for key in ("fedavg", "distill"):  # registry choices the config types cannot see
            try:
                make_aggregator(getattr(config, key).aggregator)
            except ConfigError as err:
                raise ConfigError(f"{key}.aggregator: {err}") from None

    @cached_property
    def federation(self) -> Federation:
        """Data, partition, label noise and client views (loads the dataset once)."""
        return build_federation(self.config)

    @cached_property
    def validation_test(self) -> ImageDataset:
        """Where FL validation and the FedAvg-based search measure accuracy: the test split,
        minus the server's holdout when the proxy is scored on it (``search.scoring =
        "server_holdout"``), so the proxy never sees the examples validation is judged on."""
        test = self.federation.test
        if self.config.search.scoring != "server_holdout":
            return test
        _, rest = split_server_holdout(
            test, seed=self.config.study.seed, fraction=self.config.search.holdout_fraction
        )
        return rest

    @cached_property
    def reference(self) -> ArchSpec:
        """The study's reference architecture (``[model]``)."""
        return ArchSpec.from_dict(self.config.model.model_dump())

    @cached_property
    def fedavg_settings(self) -> FedAvgSettings:
        """FedAvg server settings from the ``fedavg`` and ``federation`` sections."""
        f = self.config.fedavg
        return FedAvgSettings(
            rounds=f.rounds,
            local=TrainSettings(
                epochs=f.local_epochs,
                lr=f.lr,
                momentum=f.momentum,
                weight_decay=f.weight_decay,
                batch_size=f.batch_size,
                max_steps=f.local_steps,
            ),
            server_lr=f.server_lr,
            prox_mu=f.prox_mu,
            fraction=self.config.federation.fraction,
            aggregator=f.aggregator,
            eval_every=f.eval_every,
        )

    @property
    def distill_fraction(self) -> float:
        """Share of the clients asked for gradients each matching step: ``distill.fraction``,
        else ``federation.fraction`` (the share FedAvg samples each round)."""
        own = self.config.distill.fraction
        return self.config.federation.fraction if own is None else own

    @cached_property
    def quorum(self) -> Quorum:
        """How many replies a round needs before it is retried or skipped (``[federation]``)."""
        fed = self.config.federation
        return Quorum(min_replies=fed.min_replies, retries=fed.round_retries)

    @cached_property
    def proxy_train(self) -> TrainSettings:
        """How the proxy trains a candidate on the distilled set (``[search]``)."""
        s = self.config.search
        return TrainSettings(
            epochs=s.epochs,
            lr=s.lr,
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            batch_size=s.batch_size,
            decay_at_half=True,
            augment=s.augment,
        )

    @cached_property
    def candidates(self) -> CandidateFactory:
        """params → Candidate, the one path used by the proxy, validation and reports."""
        return CandidateFactory(reference=self.reference, train=self.proxy_train)

    @cached_property
    def space(self) -> SearchSpace:
        """The search space named by ``search.space``."""
        return load_space(self.config.search.space)

    def num_parameters(self, arch: ArchSpec) -> int:
        """Parameter count of ``arch`` on this study's images (builds the model: a bad
        architecture fails here, before any expensive work)."""
        fed = self.federation
        model = build_model(arch, input_shape=fed.train.input_shape, num_classes=fed.num_classes)
        return count_parameters(model)

    def make_engine(self) -> Engine:
        """A fresh in-process engine over the clients (its own ledger)."""
        return InProcessEngine(clients=self.federation.clients, tasks=default_tasks(self.config))


__all__ = [
    "SPACES_DIR",
    "Federation",
    "Study",
    "build_federation",
    "default_tasks",
    "faults_of",
    "flower_client",
    "load_space",
]


#: One Study per config fingerprint, per process (a Flower ClientApp process or Ray actor).
_FLOWER_STUDIES: dict[str, Study] = {}


def flower_client(
    config: StudyConfig | None, partition_id: int, num_partitions: int
) -> ClientData:
    """The Flower apps' default client-data factory: client ``partition_id`` of the study.

    Named by the run config (``client-data = "distdd_nas.study:flower_client"``), so the
    transport never imports this module. The federation is built once per process and config
    (:attr:`Study.federation`, the same one in-process engines use), so both engines see
    identical clients.

    Raises:
        ConfigError: The run carries no study config, or the node's ``num-partitions``
            differs from ``partition.num_clients``.
    """
    if config is None:
        raise ConfigError("the Flower run carries no 'study-config'; pass the study config")
    if num_partitions != config.partition.num_clients:
        raise ConfigError(
            f"the node says num-partitions={num_partitions} but the study has "
            f"partition.num_clients={config.partition.num_clients}; start the SuperNodes with "
            "matching --node-config"
        )
    key = fingerprint(config)
    if key not in _FLOWER_STUDIES:
        start = time.perf_counter()
        _FLOWER_STUDIES[key] = study = Study(config)
        _ = study.federation
        log.info("federation built in %.2fs (pid %d)", time.perf_counter() - start, os.getpid())
    return _FLOWER_STUDIES[key].federation.clients[partition_id]
