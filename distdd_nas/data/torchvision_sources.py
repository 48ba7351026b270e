"""The datasets that come as torchvision releases: MNIST, Fashion-MNIST, CIFAR-10 and SVHN.

Each loader finds the files in ``root`` (flat, or in torchvision's layout) or in system
directories, lets torchvision download them only when asked (``download=True``; offline, that
fails with one :class:`DataError` saying how to get the files), and normalises them with DC's
constants (:data:`NORMALISATION`) into :class:`~distdd_nas.data.images.DatasetSplits`:

* ``fashion_mnist`` / ``mnist`` — IDX files (gzipped or not) read by
  :func:`~distdd_nas.data.files.read_idx` from ``root`` (flat, or ``root/FashionMNIST/raw``),
  then from system directories such as Debian's ``dataset-fashion-mnist`` package.
* ``cifar10`` — the python release under ``root/cifar-10-batches-py``, read by torchvision,
  which checks the release's md5 sums before it unpickles anything.
* ``svhn`` — ``train_32x32.mat`` / ``test_32x32.mat`` under ``root``, read by
  :func:`~distdd_nas.data.files.read_svhn_mat`.

The loaders are registered by name in :data:`distdd_nas.data.datasets.DATASETS`, which callers
go through (:func:`~distdd_nas.data.datasets.load_dataset`); torchvision is imported only when a
loader needs it. Every constant here is immutable module data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from distdd_nas.data.files import IDX_PARTS, find_idx_dir, load_idx_pair, read_svhn_mat
from distdd_nas.data.images import DatasetSplits, build_dataset
from distdd_nas.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Searched for Fashion-MNIST after ``root`` (Debian's ``dataset-fashion-mnist``). Tests and
#: callers override it with ``load_dataset(..., system_dirs=...)``.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))

#: DC's per-channel (mean, std) of the raw [0, 1] pixels.
NORMALISATION = MappingProxyType(
    {
        "fashion_mnist": ((0.2860,), (0.3530,)),
        "mnist": ((0.1307,), (0.3081,)),
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    }
)

_SVHN_FILES = MappingProxyType({"train": "train_32x32.mat", "test": "test_32x32.mat"})


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------------------------


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
    """Load an MNIST-style dataset from the first directory with all four IDX files: ``root``
    (flat or torchvision layout) when it is set — a set but unusable root is an error, never a
    silent fall back to another copy — else the system directories."""
    dirs = [root, root / torch_dir / "raw"] if root is not None else list(system_dirs)
    files = find_idx_dir(dirs)
    if files is None and download:
        if root is None:
            raise ConfigError(
                f"data.download=true needs a directory to download {name} into; "
                "also set --set data.root=DIR"
            )
        _torchvision_download(name, root=root)
        files = find_idx_dir(dirs)
    if files is None:
        looked = ", ".join(str(d) for d in dirs) or "nowhere (no data.root given)"
        raise DataError(
            f"{name} not found: no directory with train-/t10k-{{images-idx3,labels-idx1}}-ubyte"
            f"[.gz] among {looked}; {hint}"
        )
    log.info("loading %s from %s", name, files[IDX_PARTS[0]].parent)
    n = len(classes)
    train = load_idx_pair(files[IDX_PARTS[0]], files[IDX_PARTS[1]], num_classes=n)
    test = load_idx_pair(files[IDX_PARTS[2]], files[IDX_PARTS[3]], num_classes=n)
    mean, std = NORMALISATION[name]
    return DatasetSplits(
        train=build_dataset(
            name, pixels=train[0], labels=train[1], classes=classes, mean=mean, std=std
        ),
        test=build_dataset(
            name, pixels=test[0], labels=test[1], classes=classes, mean=mean, std=std
        ),
    )


def load_fashion_mnist(
    *, root: Path | None, download: bool, system_dirs: tuple[Path, ...] | None, **_: object
) -> DatasetSplits:
    """Fashion-MNIST from ``root`` if set, else :data:`FASHION_MNIST_SYSTEM_DIRS` (or
    ``system_dirs``)."""
    return _idx_dataset(
        "fashion_mnist",
        root=root,
        download=download,
        torch_dir="FashionMNIST",
        system_dirs=FASHION_MNIST_SYSTEM_DIRS if system_dirs is None else system_dirs,
        classes=FASHION_CLASSES,
        hint="apt-get install dataset-fashion-mnist, or --set data.root=DIR with the IDX "
        "files, or --set data.download=true when online",
    )


def load_mnist(
    *, root: Path | None, download: bool, system_dirs: tuple[Path, ...] | None, **_: object
) -> DatasetSplits:
    """MNIST from ``root``, then ``system_dirs`` (none by default)."""
    return _idx_dataset(
        "mnist",
        root=root,
        download=download,
        torch_dir="MNIST",
        system_dirs=() if system_dirs is None else system_dirs,
        classes=DIGIT_CLASSES,
        hint="--set data.root=DIR with the MNIST IDX files (flat or DIR/MNIST/raw), "
        "or --set data.download=true when online",
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 and SVHN
# --------------------------------------------------------------------------------------------


def load_cifar10(*, root: Path | None, download: bool, **_: object) -> DatasetSplits:
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
        build_dataset(
            "cifar10",
            pixels=np.asarray(p.data, dtype=np.uint8).transpose(0, 3, 1, 2),
            labels=np.asarray(p.targets, dtype=np.int64),
            classes=CIFAR10_CLASSES,
            mean=mean,
            std=std,
        )
        for p in parts
    )
    return DatasetSplits(train=train, test=test)


def load_svhn(*, root: Path | None, download: bool, **_: object) -> DatasetSplits:
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
        build_dataset("svhn", pixels=x, labels=y, classes=DIGIT_CLASSES, mean=mean, std=std)
        for x, y in (read_svhn_mat(paths["train"]), read_svhn_mat(paths["test"]))
    )
    return DatasetSplits(train=train, test=test)


__all__ = [
    "CIFAR10_CLASSES",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "FASHION_MNIST_SYSTEM_DIRS",
    "NORMALISATION",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_svhn",
]
