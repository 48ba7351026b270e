"""DC's evaluation protocol and the random-real-subset reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distdd_nas.config import EvalSection
from distdd_nas.data import DatasetSplits
from distdd_nas.distill import evaluate_random_real, evaluate_synthetic, random_real_subset
from distdd_nas.errors import ConfigError
from distdd_nas.seeding import derive_seed
from tests.distill.conftest import TINY

QUICK = EvalSection(num_models=2, epochs=60)


def test_random_real_subset_is_balanced_seeded_and_inside_the_pool(digits: DatasetSplits) -> None:
    train = digits.train
    pool = np.arange(0, len(train), 2)
    x, y = random_real_subset(train, pool, ipc=3, num_classes=10, seed=1)
    assert x.shape == (30, 1, 8, 8) and np.bincount(y.numpy()).tolist() == [3] * 10
    x2, _ = random_real_subset(train, pool, ipc=3, num_classes=10, seed=1)
    x3, _ = random_real_subset(train, pool, ipc=3, num_classes=10, seed=2)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    rows = {tuple(r) for r in train.images[torch.as_tensor(pool)].reshape(len(pool), -1).tolist()}
    assert all(tuple(r) in rows for r in x.reshape(30, -1).tolist())


def test_real_subset_beats_noise_and_evaluation_is_reproducible(digits: DatasetSplits) -> None:
    train, test = digits.train, digits.test
    x, y = random_real_subset(train, np.arange(len(train)), ipc=10, num_classes=10, seed=0)
    mean, std, accs = evaluate_synthetic(x, y, arch=TINY, test=test, settings=QUICK, seed=3)
    assert len(accs) == 2 and mean == pytest.approx(np.mean(accs)) and std >= 0
    again = evaluate_synthetic(x, y, arch=TINY, test=test, settings=QUICK, seed=3)
    assert again[2] == accs
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noise_mean, _, _ = evaluate_synthetic(noise, y, arch=TINY, test=test, settings=QUICK, seed=3)
    assert mean > 0.6 and noise_mean < 0.3


def test_mismatched_inputs_are_config_errors(digits: DatasetSplits) -> None:
    test = digits.test
    with pytest.raises(ConfigError, match="as many labels as images"):
        evaluate_synthetic(
            torch.zeros(4, 1, 8, 8),
            torch.zeros(3, dtype=torch.long),
            arch=TINY,
            test=test,
            settings=QUICK,
            seed=0,
        )
    with pytest.raises(ConfigError, match="do not fit the test set"):
        evaluate_synthetic(
            torch.zeros(4, 1, 9, 9),
            torch.zeros(4, dtype=torch.long),
            arch=TINY,
            test=test,
            settings=QUICK,
            seed=0,
        )


def test_random_real_reference_trains_each_network_on_its_own_subset(
    digits: DatasetSplits,
) -> None:
    train, test = digits.train, digits.test
    pool = np.arange(len(train))
    mean, std, accs = evaluate_random_real(
        train, pool, ipc=5, arch=TINY, test=test, settings=QUICK, seed=4
    )
    assert len(accs) == 2 and mean == pytest.approx(np.mean(accs)) and std == np.std(accs)
    one = QUICK.model_copy(update={"num_models": 1})
    for m in range(2):  # independent reference: subset m, then one network, seeded by m
        x, y = random_real_subset(
            train, pool, ipc=5, num_classes=10, seed=derive_seed(4, "subset", m)
        )
        ref = evaluate_synthetic(
            x, y, arch=TINY, test=test, settings=one, seed=derive_seed(4, "net", m)
        )
        assert ref[2] == [accs[m]]
    first, _ = random_real_subset(
        train, pool, ipc=5, num_classes=10, seed=derive_seed(4, "subset", 0)
    )
    second, _ = random_real_subset(
        train, pool, ipc=5, num_classes=10, seed=derive_seed(4, "subset", 1)
    )
    assert not torch.equal(first, second)
