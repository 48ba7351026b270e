"""On-disk dataset formats, read without pickle: IDX (MNIST family, gzipped or not) and SVHN's
MATLAB files. Each reader checks what it reads (magic numbers, shapes, payload size, label
range), so a truncated or foreign file fails with one :class:`DataError` naming it."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distdd_nas.errors import DataError

IDX_PARTS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08


def check_labels(labels: np.ndarray, *, num_classes: int, source: str) -> None:
    """Raise DataError unless every label lies in 0..num_classes-1."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{source} holds labels outside 0..{num_classes - 1} "
            f"(min {labels.min()}, max {labels.max()}); obtain an intact copy of the file"
        )


def _read_maybe_gzip(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}: {err}); delete it and obtain it again"
        ) from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or not) into a read-only uint8 array.

    The magic number, the dimension count and the exact payload size are checked, so a
    truncated or foreign file fails here with a :class:`DataError` naming it instead of
    producing garbage images.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    fix = "delete it and obtain the file again"
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _IDX_UBYTE or not 1 <= raw[3] <= 4:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number); {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header; {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path} is {problem} ({len(raw)} bytes, header says {expected}); {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_dir(dirs: Sequence[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first directory that holds all of them (.gz or plain)."""
    for d in dirs:
        found: dict[str, Path] = {}
        for stem in IDX_PARTS:
            hit = next((d / n for n in (f"{stem}.gz", stem) if (d / n).is_file()), None)
            if hit is not None:
                found[stem] = hit
        if len(found) == len(IDX_PARTS):
            return found
    return None


def load_idx_pair(
    images_path: Path, labels_path: Path, *, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×1×H×W images, int64 labels) from one images/labels IDX pair."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) do not form an "
            "images/labels pair; obtain both files from the same release"
        )
    check_labels(labels, num_classes=num_classes, source=str(labels_path))
    return images[:, None], labels.astype(np.int64)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×3×32×32 images, int64 labels 0..9) from one SVHN ``*_32x32.mat`` file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(path), variable_names=("X", "y"))
    except (OSError, ValueError, MatReadError, NotImplementedError) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}: {err}); delete it and obtain it again"
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[2] != 3 or y.size != x.shape[3]:
        raise DataError(
            f"{path} does not hold SVHN arrays X (32×32×3×N) and y (N); "
            "delete it and obtain it again"
        )
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
    check_labels(labels, num_classes=10, source=str(path))
    return np.asarray(x, dtype=np.uint8).transpose(3, 2, 0, 1), labels
