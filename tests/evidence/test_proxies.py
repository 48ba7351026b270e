"""Cheap proxies of a candidate pool: NASWOT against a slow reference, table-read proxies, and
the product's proxy (and its random-real reference) on the smoke study."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ConfigError
from distdd_nas.evidence.proxies import (
    distilled_proxy,
    fedavg_after,
    naswot,
    naswot_score,
    parameter_count,
    random_real_proxy,
    random_real_set,
)
from distdd_nas.search.candidate import Candidate
from distdd_nas.search.objective import ProxyScorer
from distdd_nas.seeding import torch_generator
from distdd_nas.study import Study
from tests.conftest import smoke


def _tiny_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(4, 12),
        nn.ReLU(),
        nn.Linear(12, 10),
        nn.Sigmoid(),
        nn.Linear(10, 8),
        nn.LeakyReLU(0.01),
    )


def _slow_naswot(net: nn.Sequential, images: torch.Tensor) -> float:
    """Codes from explicit pre-activations, kernel from explicit loops over pairs and units."""
    lin1, lin2, lin3 = net[1], net[3], net[5]
    with torch.no_grad():
        h1 = images.flatten(1) @ lin1.weight.T + lin1.bias
        h2 = torch.relu(h1) @ lin2.weight.T + lin2.bias
        h3 = torch.sigmoid(h2) @ lin3.weight.T + lin3.bias
    codes = torch.cat([h1 > 0, h2 > 0, h3 > 0], dim=1).tolist()
    n = len(codes)
    kernel = np.zeros((n, n))
    for i, j in itertools.product(range(n), range(n)):
        kernel[i, j] = sum(a == b for a, b in zip(codes[i], codes[j]))
    sign, logdet = np.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


def test_naswot_equals_a_slow_reference_on_a_tiny_network() -> None:
    net = _tiny_net()
    images = torch.randn(7, 1, 2, 2, generator=torch_generator(0, "naswot-test"))
    fast = naswot_score(net, images)
    assert math.isfinite(fast)
    assert fast == pytest.approx(_slow_naswot(net, images), rel=1e-10)
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed


def test_naswot_is_minus_inf_for_identical_codes_or_no_activation() -> None:
    net = _tiny_net()
    x = torch.randn(3, 1, 2, 2, generator=torch_generator(1, "naswot-test"))
    assert naswot_score(net, torch.cat([x, x[:1]])) == -math.inf  # two equal rows of K
    assert naswot_score(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), x) == -math.inf


def _curves() -> pd.DataFrame:
    rows = []
    for cid, acc in (("a", 0.5), ("b", 0.7)):
        for rep in (0, 1):
            for r in (1, 2, 3):
                rows.append(
                    {
                        "candidate_id": cid,
                        "replicate": rep,
                        "seed": rep,
                        "round": r,
                        "test_accuracy": acc + 0.1 * r + 0.01 * rep,
                        "bytes_up": 100 * r + rep,
                        "bytes_down": 1000 * r,
                        "wall_s": 2.0 * r,
                    }
                )
    return pd.DataFrame(rows)


def test_fedavg_after_reads_the_other_replicate_at_that_round() -> None:
    got = fedavg_after(_curves(), rounds=2, candidate_ids=["b", "a"])
    assert got.name == "fedavg_r2" and got.candidate_ids == ("b", "a")
    assert got.scores.tolist() == pytest.approx([0.91, 0.71])  # replicate 1: +0.01
    assert got.bytes.tolist() == [2201, 2201] and got.total_bytes == 4402
    assert got.seconds.tolist() == [4.0, 4.0]
    default = fedavg_after(_curves(), rounds=1, replicate=0)
    assert default.candidate_ids == ("a", "b")
    assert default.scores.tolist() == pytest.approx([0.6, 0.8])
    with pytest.raises(ConfigError, match=r"no row at round 4, replicate 1"):
        fedavg_after(_curves(), rounds=4)


def test_parameter_count_is_free_and_larger_is_better() -> None:
    table = pd.DataFrame({"candidate_id": ["x", "y"], "num_parameters": [10, 300]})
    got = parameter_count(table)
    assert got.scores.tolist() == [10.0, 300.0] and got.total_bytes == 0
    assert got.to_frame().columns.tolist() == [
        "candidate_id",
        "param_count",
        "param_count_bytes",
        "param_count_s",
    ]


@pytest.fixture(scope="module")
def study() -> Study:
    return Study(smoke("search.epochs=3"))


def _three(study: Study) -> list[Candidate]:
    make = study.candidates
    return [
        make({}),
        make({"arch.depth": 1, "arch.width": 8, "arch.act": "sigmoid", "arch.norm": "none"}),
        make({"arch.depth": 2, "arch.width": 8, "arch.pool": "max"}),
    ]


def _noise_set(study: Study) -> DistilledSet:
    fed = study.federation
    c, k = fed.num_classes, 2
    images = torch.randn(c * k, *fed.train.input_shape, generator=torch_generator(0, "syn"))
    return DistilledSet(images, torch.arange(c).repeat_interleave(k), c)


def _scorer(study: Study) -> ProxyScorer:
    return ProxyScorer(
        distilled=_noise_set(study),
        like=study.federation.train,
        scoring="federated",
        engine=study.make_engine(),
        seed=0,
    )


def test_naswot_on_smoke_candidates_is_finite_and_seeded(study: Study) -> None:
    images = _noise_set(study).images
    like = study.federation.train
    a = naswot(_three(study), images, like=like, seed=0, batch=12)
    b = naswot(_three(study), images, like=like, seed=0, batch=12)
    assert np.isfinite(a.scores).all() and a.total_bytes == 0
    assert a.scores.tolist() == b.scores.tolist()
    assert a.candidate_ids == tuple(c.candidate_id for c in _three(study))


def test_distilled_proxy_scores_in_unit_interval_deterministic_and_metered(study: Study) -> None:
    candidates = _three(study)
    a = distilled_proxy(candidates, _scorer(study))
    b = distilled_proxy(candidates, _scorer(study))
    assert a.candidate_ids == tuple(c.candidate_id for c in candidates)
    assert np.isfinite(a.scores).all() and ((a.scores >= 0) & (a.scores <= 1)).all()
    assert a.scores.tolist() == b.scores.tolist()
    assert (a.bytes > 0).all() and a.bytes.tolist() == b.bytes.tolist()
    longer = distilled_proxy(candidates[:1], _scorer(study), epochs=4, name="distdd_e4")
    assert longer.name == "distdd_e4" and longer.candidate_ids == a.candidate_ids[:1]


def test_random_real_proxy_trains_on_a_seeded_real_subset(study: Study) -> None:
    fed = study.federation
    pool = np.concatenate(fed.split.client_indices)
    subset = random_real_set(fed.train, pool, ipc=3, seed=0)
    assert len(subset.labels) == 3 * fed.num_classes
    assert np.bincount(subset.labels.numpy()).tolist() == [3] * fed.num_classes
    kwargs = {"train": fed.train, "pool": pool, "ipc": 3, "seed": 0}
    a = random_real_proxy(_three(study), _scorer(study), **kwargs)  # type: ignore[arg-type]
    b = random_real_proxy(_three(study), _scorer(study), **kwargs)  # type: ignore[arg-type]
    assert np.isfinite(a.scores).all() and ((a.scores >= 0) & (a.scores <= 1)).all()
    assert a.scores.tolist() == b.scores.tolist() and (a.bytes > 0).all()
    assert "centralized reference" in a.note
    other = random_real_set(fed.train, pool, ipc=3, seed=1)
    assert not torch.equal(other.images, subset.images)
