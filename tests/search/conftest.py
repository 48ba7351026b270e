"""Shared search fixtures: the smoke federation (digits, 4 clients) and a tiny "distilled" set.

The stand-in distilled set is three real training images per class: deterministic, instant, and
good enough to tell architectures apart, which is all the search layer's tests need.
"""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.distill.result import DistilledSet
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.federation import InProcessEngine
from distdd_nas.models import ArchSpec
from distdd_nas.search.candidate import CandidateFactory
from distdd_nas.search.objective import ProxyObjective, ProxyScorer, split_server_holdout
from distdd_nas.search.space import SearchSpace
from distdd_nas.study import Federation, build_federation, default_tasks
from distdd_nas.training import TrainSettings
from tests.conftest import smoke

TINY_SPACE = {
    "fixed": {"arch.family": "convnet", "arch.norm": "instance", "arch.pool": "avg"},
    "params": {
        "arch.depth": {"type": "int", "low": 1, "high": 2},
        "arch.width": {"type": "categorical", "choices": [4, 8]},
        "arch.act": {"type": "categorical", "choices": ["relu", "sigmoid"]},
    },
}
REFERENCE = {"arch.depth": 2, "arch.width": 8, "arch.act": "relu"}


@pytest.fixture(scope="session")
def federation() -> Federation:
    return build_federation(smoke())


@pytest.fixture(scope="session")
def distilled(federation: Federation) -> DistilledSet:
    labels = federation.train.labels.numpy()
    idx = np.concatenate([np.flatnonzero(labels == c)[:3] for c in range(10)])
    return DistilledSet(
        federation.train.images[idx].clone(), federation.train.labels[idx].clone(), 10
    )


@pytest.fixture(scope="session")
def counts(federation: Federation) -> np.ndarray:
    return federation.class_counts().to_numpy()


@pytest.fixture
def factory() -> CandidateFactory:
    return CandidateFactory(
        reference=ArchSpec(depth=2, width=8),
        train=TrainSettings(epochs=6, lr=0.01, momentum=0.9, batch_size=32),
    )


@pytest.fixture
def tiny_space() -> SearchSpace:
    return SearchSpace.from_dict(TINY_SPACE, name="tiny")


@pytest.fixture
def fedavg_base() -> FedAvgSettings:
    return FedAvgSettings(rounds=2, local=TrainSettings(epochs=1, lr=0.05, batch_size=16))


@pytest.fixture
def holdout_scorer(
    federation: Federation,
    distilled: DistilledSet,
    counts: np.ndarray,
    fedavg_base: FedAvgSettings,
) -> ProxyScorer:
    holdout, _ = split_server_holdout(federation.test, seed=0)
    return ProxyScorer(
        distilled=distilled,
        like=federation.train,
        scoring="server_holdout",
        holdout=holdout,
        client_class_counts=counts,
        fedavg=fedavg_base,
        seed=0,
        virtual_examples=200,
        intermediate=True,  # as the search stage sets it when a pruner reads them
    )


@pytest.fixture
def federated_scorer(
    federation: Federation,
    distilled: DistilledSet,
    counts: np.ndarray,
    fedavg_base: FedAvgSettings,
) -> ProxyScorer:
    engine = InProcessEngine(clients=federation.clients, tasks=default_tasks())
    return ProxyScorer(
        distilled=distilled,
        like=federation.train,
        scoring="federated",
        engine=engine,
        client_class_counts=counts,
        fedavg=fedavg_base,
        seed=0,
        virtual_examples=200,
    )


@pytest.fixture
def holdout_objective(holdout_scorer: ProxyScorer, factory: CandidateFactory) -> ProxyObjective:
    return ProxyObjective(scorer=holdout_scorer, candidates=factory)
