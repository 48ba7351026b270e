"""Values produced by distillation: the synthetic set and the run's record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from distdd_nas.errors import ArtifactError


@dataclass(frozen=True, eq=False)
class DistilledSet:
    """Synthetic images (float32 N×C×H×W, normalised like the real data) and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    @property
    def ipc(self) -> int:
        """Images per class (labels are class-balanced by construction)."""
        return int(len(self.labels) // max(self.num_classes, 1))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``synthetic.npz``: images float32, labels int64, num_classes int64
        (0-d); the inverse of :meth:`from_arrays`."""
        return {
            "images": self.images.detach().cpu().numpy().astype(np.float32),
            "labels": self.labels.cpu().numpy().astype(np.int64),
            "num_classes": np.asarray(self.num_classes, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> DistilledSet:
        """Rebuild from :meth:`to_arrays` output; malformed arrays raise ArtifactError."""
        fix = "delete the distilled directory and re-run 'distdd-nas distill'"
        missing = {"images", "labels", "num_classes"} - set(arrays)
        if missing:
            raise ArtifactError(f"synthetic set lacks {sorted(missing)}; {fix}")
        images, labels = np.asarray(arrays["images"]), np.asarray(arrays["labels"])
        if images.ndim != 4 or images.dtype != np.float32:
            raise ArtifactError(
                f"synthetic images must be float32 N×C×H×W, got {images.dtype} "
                f"{images.shape}; {fix}"
            )
        if labels.ndim != 1 or labels.dtype != np.int64 or len(labels) != len(images):
            raise ArtifactError(
                f"synthetic labels must be int64 of length {len(images)}, got "
                f"{labels.dtype} {labels.shape}; {fix}"
            )
        raw = np.asarray(arrays["num_classes"])
        if raw.size != 1 or raw.dtype.kind not in "iu" or int(raw.reshape(-1)[0]) < 1:
            raise ArtifactError(
                f"synthetic set's num_classes must be one positive integer, got "
                f"{raw.dtype} {raw.shape}; {fix}"
            )
        num_classes = int(raw.reshape(-1)[0])
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ArtifactError(f"synthetic labels fall outside 0..{num_classes - 1}; {fix}")
        if not np.isfinite(images).all():
            raise ArtifactError(f"synthetic images hold NaN/Inf; {fix}")
        return cls(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()), num_classes)


@dataclass(frozen=True, eq=False)
class DistillResult:
    """A finished distillation: the synthetic set, one history row per iteration, the class
    counts the server learnt from the clients' messages, and wall time."""

    synthetic: DistilledSet
    history: pd.DataFrame
    client_class_counts: np.ndarray
    wall_s: float
    privacy: dict[str, float] = field(default_factory=dict)  # noise, ε, δ when DP is on

    def __repr__(self) -> str:
        return (
            f"DistillResult(images={tuple(self.synthetic.images.shape)}, "
            f"iterations={len(self.history)}, wall_s={self.wall_s:.1f})"
        )
