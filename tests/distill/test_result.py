"""DistilledSet ⇄ arrays (the synthetic.npz payload), with validation on the way back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distdd_nas.distill import DistilledSet
from distdd_nas.errors import ArtifactError


def _set() -> DistilledSet:
    images = torch.randn(6, 1, 4, 4)
    return DistilledSet(images, torch.tensor([0, 0, 1, 1, 2, 2]), num_classes=3)


def test_round_trip_is_exact() -> None:
    original = _set()
    arrays = original.to_arrays()
    assert arrays["images"].dtype == np.float32 and arrays["labels"].dtype == np.int64
    back = DistilledSet.from_arrays(arrays)
    assert torch.equal(back.images, original.images)
    assert torch.equal(back.labels, original.labels)
    assert back.num_classes == 3 and back.ipc == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((6, 4, 4), dtype=np.float32)}, "float32 N×C×H×W"),
        ({"images": np.zeros((6, 1, 4, 4), dtype=np.float64)}, "float32 N×C×H×W"),
        ({"labels": np.zeros(5, dtype=np.int64)}, "int64 of length 6"),
        ({"labels": np.zeros(6, dtype=np.int32)}, "int64 of length 6"),
        ({"labels": np.full(6, 3, dtype=np.int64)}, "outside 0..2"),
        ({"images": np.full((6, 1, 4, 4), np.nan, dtype=np.float32)}, "NaN/Inf"),
        ({"num_classes": np.zeros(0, dtype=np.int64)}, "one positive integer"),
        ({"num_classes": np.asarray(3.0)}, "one positive integer"),
    ],
)
def test_malformed_arrays_raise_artifact_errors(
    change: dict[str, np.ndarray], message: str
) -> None:
    arrays = {**_set().to_arrays(), **change}
    with pytest.raises(ArtifactError, match=message):
        DistilledSet.from_arrays(arrays)


def test_missing_keys_raise_artifact_errors() -> None:
    arrays = _set().to_arrays()
    del arrays["labels"]
    with pytest.raises(ArtifactError, match=r"lacks \['labels'\]"):
        DistilledSet.from_arrays(arrays)
