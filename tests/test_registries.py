"""One source of truth per choice set: each ``Literal`` of config.py names its registry's keys.

A choice is spelled twice on purpose — as a ``Literal`` (so a study file fails validation with
the allowed values) and as a registry dict next to the implementations (name → factory) — and
these tests tie the two: adding an implementation without its Literal value, or the reverse,
fails here. Unknown names reaching the registries directly (sections built without validation,
library callers) raise ConfigError listing the choices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from pydantic import BaseModel

from distdd_nas.config import (
    DataSection,
    DistillSection,
    NoiseSection,
    PartitionSection,
    SearchSection,
)
from distdd_nas.data.datasets import DATASETS, load_dataset
from distdd_nas.data.noise import NOISE_KINDS, apply_label_noise
from distdd_nas.data.partition import PARTITIONERS, FederatedSplit, make_partitioner
from distdd_nas.distill.matching import DISTANCES, get_distance
from distdd_nas.distill.server import (
    BATCH_MODES,
    GRAD_DTYPES,
    INITS,
    NET_UPDATES,
    batch_shares,
    check_settings,
)
from distdd_nas.errors import ConfigError
from distdd_nas.search.backends import BACKENDS, create_backend
from distdd_nas.search.backends import nni as nni_backend
from distdd_nas.search.backends import optuna as optuna_backend
from distdd_nas.search.backends.nni_tuner import TUNERS
from distdd_nas.search.space import SearchSpace

SPACE = {"params": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}}


def choices(section: type[BaseModel], field: str) -> set[str]:
    """The values of the ``Literal`` annotation of ``section.field``."""
    values = get_args(section.model_fields[field].annotation)
    assert values, f"{section.__name__}.{field} is not a Literal"
    return set(values)


def keys(*registries: Iterable[str]) -> set[str]:
    return {name for registry in registries for name in registry}


@pytest.mark.parametrize(
    ("section", "field", "registries"),
    [
        (DataSection, "name", [DATASETS]),
        (PartitionSection, "method", [PARTITIONERS]),
        (NoiseSection, "kind", [NOISE_KINDS]),
        (DistillSection, "distance", [DISTANCES]),
        (DistillSection, "batch_mode", [BATCH_MODES]),
        (DistillSection, "net_update", [NET_UPDATES]),
        (DistillSection, "init", [INITS]),
        (DistillSection, "grad_dtype", [GRAD_DTYPES]),
        (SearchSection, "backend", [BACKENDS]),
        # search.sampler / search.pruner serve both backends: the Literal is the union.
        (SearchSection, "sampler", [optuna_backend.SAMPLERS, TUNERS]),
        (SearchSection, "pruner", [optuna_backend.PRUNERS, nni_backend.PRUNERS]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else v if isinstance(v, str) else "",
)
def test_literal_equals_registry_keys(
    section: type[BaseModel], field: str, registries: list[Iterable[str]]
) -> None:
    assert sorted(choices(section, field)) == sorted(keys(*registries))


def test_backend_registries_are_subsets_of_the_search_literals() -> None:
    for registry in (optuna_backend.SAMPLERS, TUNERS):
        assert set(registry) <= choices(SearchSection, "sampler")
    for registry in (optuna_backend.PRUNERS, nni_backend.PRUNERS):
        assert set(registry) <= choices(SearchSection, "pruner")


def _noise(kind: str) -> Any:
    labels = np.arange(4) % 2
    split = FederatedSplit(client_indices=(np.arange(2), np.arange(2, 4)), num_classes=2)
    return apply_label_noise(
        labels, split, kind=kind, rate=0.5, client_fraction=0.5, num_classes=2, seed=0
    )


def _distill(key: str) -> Callable[[str], Any]:
    return lambda name: check_settings(DistillSection().model_copy(update={key: name}))


def _space() -> SearchSpace:
    return SearchSpace.from_dict(SPACE)


def _backend(name: str, tmp_path: Path) -> Any:
    return create_backend(name, space=_space(), storage=None, study_name="s", workdir=tmp_path)


FAILURES: list[tuple[str, Iterable[str], Callable[..., Any]]] = [
    ("datasets", DATASETS, lambda name, _: load_dataset(name)),
    ("partitioners", PARTITIONERS, lambda name, _: make_partitioner(name, num_clients=2)),
    ("noise", NOISE_KINDS, lambda name, _: _noise(name)),
    ("distances", DISTANCES, lambda name, _: get_distance(name)),
    (
        "batch_modes",
        BATCH_MODES,
        lambda name, _: batch_shares(np.ones((1, 2), dtype=np.int64), batch_real=1, mode=name),
    ),
    ("net_updates", NET_UPDATES, lambda name, _: _distill("net_update")(name)),
    ("inits", INITS, lambda name, _: _distill("init")(name)),
    ("grad_dtypes", GRAD_DTYPES, lambda name, _: _distill("grad_dtype")(name)),
    ("backends", BACKENDS, _backend),
    (
        "optuna_samplers",
        optuna_backend.SAMPLERS,
        lambda name, _: optuna_backend.make_sampler(name, seed=0, space=_space()),
    ),
    ("optuna_pruners", optuna_backend.PRUNERS, lambda name, _: optuna_backend.make_pruner(name)),
    (
        "nni_tuners",
        TUNERS,
        lambda name, tmp: nni_backend.NniBackend(space=_space(), workdir=tmp, tuner=name),
    ),
    (
        "nni_pruners",
        nni_backend.PRUNERS,
        lambda name, tmp: nni_backend.NniBackend(space=_space(), workdir=tmp, pruner=name),
    ),
]


@pytest.mark.parametrize(
    ("registry", "call"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_unknown_name_raises_config_error_listing_the_choices(
    registry: Iterable[str], call: Callable[..., Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="'no-such-choice'") as err:
        call("no-such-choice", tmp_path)
    assert ", ".join(registry) in str(err.value)
