"""The in-memory image container every stage indexes into: :class:`ImageDataset`, its train/test
pair :class:`DatasetSplits`, and :func:`build_dataset`, which normalises raw pixels into one.

Kept apart from the loaders (:mod:`.sources`, :mod:`.datasets`) so that code which only handles
datasets (partitions, engines, models) does not depend on where the files come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from distdd_nas.errors import DataError


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images as a float32 tensor N×C×H×W (already normalised), labels as an int64 tensor N.

    ``mean`` and ``std`` are the per-channel constants used for the normalisation, kept so that
    images can be mapped back to pixel space (:meth:`denormalise`) for plots and checks.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1:
            raise DataError(
                f"dataset {self.name!r} has images of shape {tuple(self.images.shape)} and labels "
                f"of shape {tuple(self.labels.shape)}; pass images N×C×H×W and labels N"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"dataset {self.name!r} has {self.images.shape[0]} images but "
                f"{self.labels.shape[0]} labels; pass one label per image"
            )
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"dataset {self.name!r} has {channels} channels but {len(self.mean)} means and "
                f"{len(self.std)} stds; pass one mean and one std per channel"
            )
        if self.labels.dtype != torch.int64:
            raise DataError(
                f"dataset {self.name!r} has {self.labels.dtype} labels; pass int64 labels"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (labels lie in ``0..num_classes-1``)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image, as models expect it."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor | Sequence[int]) -> ImageDataset:
        """The examples at ``indices``, in that order (rows gathered by tensor indexing)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return replace(self, images=self.images[idx], labels=self.labels[idx])

    def with_labels(self, labels: np.ndarray | torch.Tensor) -> ImageDataset:
        """The same images with other labels (e.g. noisy ones); the images are shared."""
        new = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels))
        if new.shape != self.labels.shape:
            raise DataError(
                f"labels of shape {tuple(new.shape)} do not fit the {len(self)} images of "
                f"{self.name!r}; pass exactly one label per image"
            )
        return replace(self, labels=new.to(torch.int64))

    def denormalise(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """Map normalised images (default: this dataset's) back to [0, 1] pixel space."""
        x = self.images if images is None else images
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return x * std + mean


@dataclass(frozen=True)
class DatasetSplits:
    """Train and test parts of one dataset (same classes and normalisation)."""

    train: ImageDataset
    test: ImageDataset


def build_dataset(
    name: str,
    *,
    pixels: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    mean: Sequence[float],
    std: Sequence[float],
) -> ImageDataset:
    """Normalise N×C×H×W pixels (uint8 in 0..255 or float in [0, 1]) into an ImageDataset."""
    x = torch.from_numpy(np.array(pixels, dtype=np.float32, order="C"))  # own, writable copy
    if pixels.dtype == np.uint8:
        x.div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x.sub_(m).div_(s)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    return ImageDataset(
        name=name,
        images=x,
        labels=y,
        classes=classes,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


__all__ = ["DatasetSplits", "ImageDataset", "build_dataset"]
