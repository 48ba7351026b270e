"""The Flower apps' default client data: distdd_nas.study.flower_client (no Flower needed)."""

from __future__ import annotations

import numpy as np
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.study import Study, flower_client
from tests.conftest import smoke


def test_flower_client_is_the_study_client_built_once() -> None:
    config = smoke()
    n = config.partition.num_clients
    want = Study(config).federation.clients
    got = [flower_client(config, cid, n) for cid in range(n)]
    for mine, ref in zip(got, want, strict=True):
        assert mine.cid == ref.cid
        np.testing.assert_array_equal(mine.train_indices, ref.train_indices)
        np.testing.assert_array_equal(mine.holdout_indices, ref.holdout_indices)
        np.testing.assert_array_equal(mine.train_labels(), ref.train_labels())
    again = flower_client(smoke(), 0, n)  # an equal config: the same cached federation
    assert again is got[0]


def test_flower_client_refuses_a_wrong_node_config() -> None:
    config = smoke()
    n = config.partition.num_clients
    with pytest.raises(ConfigError, match="carries no 'study-config'"):
        flower_client(None, 0, n)
    with pytest.raises(
        ConfigError, match=f"num-partitions={n + 1} but the study has partition.num_clients={n}"
    ):
        flower_client(config, 0, n + 1)
