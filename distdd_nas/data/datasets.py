"""Image datasets as one in-memory container, loaded offline from known places.

:class:`ImageDataset` holds normalised float32 images (N×C×H×W) and int64 labels; clients and
servers index into it instead of copying it. Sources:

* ``digits`` — scikit-learn's 1797 8×8 digits (ships with scikit-learn). It has no test split,
  so a seeded stratified one is drawn and the normalisation comes from the train part.
* ``fashion_mnist`` / ``mnist`` — IDX files (gzipped or not) read by :func:`read_idx` from
  ``root`` (flat, or torchvision's ``root/FashionMNIST/raw``), then from system directories
  such as Debian's ``dataset-fashion-mnist`` package.
* ``cifar10`` — torchvision's python release under ``root/cifar-10-batches-py``, read by
  torchvision, which checks the release's md5 sums before it unpickles anything.
* ``svhn`` — torchvision's ``train_32x32.mat`` / ``test_32x32.mat`` under ``root``, read here
  with :func:`scipy.io.loadmat`.

Nothing downloads unless ``download=True``; offline, that fails with one line saying how to get
the files. Every constant (normalisation, class names, search paths) is immutable module data.
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from distdd_nas.errors import ConfigError, DataError
from distdd_nas.seeding import numpy_rng

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "cifar10", "svhn")

#: Searched for Fashion-MNIST after ``root`` (Debian's ``dataset-fashion-mnist``). Tests and
#: callers override it with ``load_dataset(..., system_dirs=...)``.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))

#: DC's per-channel (mean, std) of the raw [0, 1] pixels.
NORMALISATION = MappingProxyType({
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
})

_IDX_PARTS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_SVHN_FILES = MappingProxyType({"train": "train_32x32.mat", "test": "test_32x32.mat"})


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


def _build(
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
        name=name, images=x, labels=y, classes=classes,
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
    )


def _check_labels(labels: np.ndarray, *, num_classes: int, source: str) -> None:
    """Raise DataError unless every label lies in 0..num_classes-1."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{source} holds labels outside 0..{num_classes - 1} "
            f"(min {labels.min()}, max {labels.max()}); obtain an intact copy of the file"
        )


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------


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
        raise DataError(
            f"{path} is {problem} ({len(raw)} bytes, header says {expected}); {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_dir(dirs: Sequence[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first directory that holds all of them (.gz or plain)."""
    for d in dirs:
        found: dict[str, Path] = {}
        for stem in _IDX_PARTS:
            hit = next((d / n for n in (f"{stem}.gz", stem) if (d / n).is_file()), None)
            if hit is not None:
                found[stem] = hit
        if len(found) == len(_IDX_PARTS):
            return found
    return None


def _load_idx_pair(
    images_path: Path, labels_path: Path, *, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×1×H×W images, int64 labels) from one images/labels IDX pair."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) do not form an "
            "images/labels pair; obtain both files from the same release"
        )
    _check_labels(labels, num_classes=num_classes, source=str(labels_path))
    return images[:, None], labels.astype(np.int64)


def _torchvision_download(name: str, *, root: Path) -> None:
    """Fetch ``name`` into ``root`` with torchvision; network failures become DataError."""
    import torchvision.datasets as tvd

    try:
        if name == "fashion_mnist":
            tvd.FashionMNIST(str(root), train=True, download=True)
        elif name == "mnist":
            tvd.MNIST(str(root), train=True, download=True)
        elif name == "svhn":
            for split in _SVHN_FILES:
                tvd.SVHN(str(root), split=split, download=True)
        else:
            raise ValueError(f"no download recipe for {name}")
    except Exception as err:  # torchvision raises URLError, RuntimeError, OSError variants
        raise DataError(
            f"downloading {name} into {root} failed ({type(err).__name__}: {err}); this machine "
            f"seems offline: copy the {name} files into {root} yourself, or drop "
            "data.download=true and point data.root at a directory that has them"
        ) from None


def _idx_dataset(
    name: str,
    *,
    root: Path | None,
    download: bool,
    torch_dir: str,
    system_dirs: Sequence[Path],
    classes: tuple[str, ...],
    hint: str,
) -> DatasetSplits:
    """Load an MNIST-style dataset from the first directory with all four IDX files."""
    local = [root, root / torch_dir / "raw"] if root is not None else []
    dirs = [*local, *system_dirs]
    files = _find_idx_dir(dirs)
    if files is None and download:
        if root is None:
            raise ConfigError(
                f"data.download=true needs a directory to download {name} into; "
                "also set --set data.root=DIR"
            )
        _torchvision_download(name, root=root)
        files = _find_idx_dir(dirs)
    if files is None:
        looked = ", ".join(str(d) for d in dirs) or "nowhere (no data.root given)"
        raise DataError(
            f"{name} not found: no directory with train-/t10k-{{images-idx3,labels-idx1}}-ubyte"
            f"[.gz] among {looked}; {hint}"
        )
    log.info("loading %s from %s", name, files[_IDX_PARTS[0]].parent)
    n = len(classes)
    train = _load_idx_pair(files[_IDX_PARTS[0]], files[_IDX_PARTS[1]], num_classes=n)
    test = _load_idx_pair(files[_IDX_PARTS[2]], files[_IDX_PARTS[3]], num_classes=n)
    mean, std = NORMALISATION[name]
    return DatasetSplits(
        train=_build(name, pixels=train[0], labels=train[1], classes=classes, mean=mean, std=std),
        test=_build(name, pixels=test[0], labels=test[1], classes=classes, mean=mean, std=std),
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 and SVHN
# --------------------------------------------------------------------------------------------


def _cifar10(*, root: Path | None, download: bool) -> DatasetSplits:
    """CIFAR-10 through torchvision (md5-verified python release under root)."""
    if root is None:
        raise DataError(
            "cifar10 needs a data directory; --set data.root=DIR holding cifar-10-batches-py "
            "(add --set data.download=true when online)"
        )
    import torchvision.datasets as tvd

    try:
        parts = [tvd.CIFAR10(str(root), train=t, download=download) for t in (True, False)]
    except Exception as err:  # torchvision: RuntimeError "not found or corrupted", URLError
        action = "download failed (offline?)" if download else "not found or corrupted"
        raise DataError(
            f"cifar10 {action} under {root / 'cifar-10-batches-py'} ({type(err).__name__}: "
            f"{err}); put the extracted CIFAR-10 python release there, or --set "
            "data.download=true when online"
        ) from None
    mean, std = NORMALISATION["cifar10"]
    train, test = (
        _build(
            "cifar10",
            pixels=np.asarray(p.data, dtype=np.uint8).transpose(0, 3, 1, 2),
            labels=np.asarray(p.targets, dtype=np.int64),
            classes=CIFAR10_CLASSES, mean=mean, std=std,
        )
        for p in parts
    )
    return DatasetSplits(train=train, test=test)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
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
    _check_labels(labels, num_classes=10, source=str(path))
    return np.asarray(x, dtype=np.uint8).transpose(3, 2, 0, 1), labels


def _svhn(*, root: Path | None, download: bool) -> DatasetSplits:
    """SVHN cropped digits from torchvision's .mat files under root."""
    if root is None:
        raise DataError(
            "svhn needs a data directory; --set data.root=DIR holding train_32x32.mat and "
            "test_32x32.mat (add --set data.download=true when online)"
        )
    paths = {split: root / fname for split, fname in _SVHN_FILES.items()}
    if download and not all(p.is_file() for p in paths.values()):
        _torchvision_download("svhn", root=root)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(
            f"svhn not found: missing {', '.join(missing)}; put torchvision's SVHN .mat files "
            "there, or --set data.download=true when online"
        )
    mean, std = NORMALISATION["svhn"]
    train, test = (
        _build("svhn", pixels=x, labels=y, classes=DIGIT_CLASSES, mean=mean, std=std)
        for x, y in (_read_svhn_mat(paths["train"]), _read_svhn_mat(paths["test"]))
    )
    return DatasetSplits(train=train, test=test)


# --------------------------------------------------------------------------------------------
# digits, subsampling, and the public entry point
# --------------------------------------------------------------------------------------------


def stratified_sample(labels: np.ndarray, size: int, *, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of exactly ``size`` examples drawn per class in proportion to the labels.

    Each class gets ``floor(size × share)`` examples; the few left over go to the classes with
    the largest remainders (ties to the lower class), so the total is exact and deterministic.
    """
    y = np.asarray(labels)
    if not 0 <= size <= len(y):
        raise ConfigError(f"sample size {size} is out of range; use 0 <= size <= {len(y)}")
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y) if len(y) else counts.astype(float)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: size - int(take.sum())]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def _digits(*, seed: int, test_fraction: float) -> DatasetSplits:
    """scikit-learn digits with a seeded stratified test split and train-set normalisation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    test_size = round(test_fraction * len(labels))
    test_idx = stratified_sample(labels, test_size, rng=numpy_rng(seed, "digits", "test_split"))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    mean = (float(pixels[train_idx].mean()),)
    std = (float(pixels[train_idx].std()),)
    return DatasetSplits(
        train=_build("digits", pixels=pixels[train_idx], labels=labels[train_idx],
                     classes=DIGIT_CLASSES, mean=mean, std=std),
        test=_build("digits", pixels=pixels[test_idx], labels=labels[test_idx],
                    classes=DIGIT_CLASSES, mean=mean, std=std),
    )


def _check_arguments(name: str, *, test_fraction: float, max_train: int | None) -> None:
    """ConfigError for an unknown name or out-of-range numbers, before any file is read."""
    if name not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; set data.name to one of {', '.join(DATASETS)}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction={test_fraction} is out of range; use 0 < f < 1")
    if max_train is not None and max_train < 1:
        raise ConfigError(f"data.max_train={max_train} is out of range; use an integer >= 1")


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.25,
    max_train: int | None = None,
    system_dirs: Sequence[str | Path] | None = None,
) -> DatasetSplits:
    """Load a dataset by name, offline unless ``download`` is set; deterministic in ``seed``.

    Args:
        name: One of :data:`DATASETS`.
        root: Directory with the dataset files (flat or torchvision layout); ``None`` uses
            only the system directories (Fashion-MNIST) or the bundled data (digits).
        download: Let torchvision fetch missing files into ``root`` (needs the internet).
        seed: Seeds the digits test split and the ``max_train`` subsample.
        test_fraction: Share of digits held out as test set (the other datasets ship one).
        max_train: Keep a seeded stratified subsample of exactly this many training examples.
        system_dirs: Where system-wide copies are searched after ``root`` (default
            :data:`FASHION_MNIST_SYSTEM_DIRS` for Fashion-MNIST, none otherwise); ``()``
            disables the fallback.

    Raises:
        ConfigError: Unknown name or out-of-range argument.
        DataError: Files missing, corrupt, or not downloadable.
    """
    _check_arguments(name, test_fraction=test_fraction, max_train=max_train)
    path = Path(root).expanduser() if root is not None else None
    extra = None if system_dirs is None else tuple(Path(d) for d in system_dirs)
    if name == "digits":
        splits = _digits(seed=seed, test_fraction=test_fraction)
    elif name == "fashion_mnist":
        splits = _idx_dataset(
            name, root=path, download=download, torch_dir="FashionMNIST",
            system_dirs=FASHION_MNIST_SYSTEM_DIRS if extra is None else extra,
            classes=FASHION_CLASSES,
            hint="apt-get install dataset-fashion-mnist, or --set data.root=DIR with the IDX "
                 "files, or --set data.download=true when online",
        )
    elif name == "mnist":
        splits = _idx_dataset(
            name, root=path, download=download, torch_dir="MNIST",
            system_dirs=() if extra is None else extra, classes=DIGIT_CLASSES,
            hint="--set data.root=DIR with the MNIST IDX files (flat or DIR/MNIST/raw), "
                 "or --set data.download=true when online",
        )
    elif name == "cifar10":
        splits = _cifar10(root=path, download=download)
    else:
        splits = _svhn(root=path, download=download)
    if max_train is not None and max_train < len(splits.train):
        keep = stratified_sample(
            splits.train.labels.numpy(), max_train, rng=numpy_rng(seed, name, "max_train")
        )
        splits = DatasetSplits(train=splits.train.subset(keep), test=splits.test)
    return splits
