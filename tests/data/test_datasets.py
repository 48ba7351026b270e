"""Dataset loading: digits, Fashion-MNIST from Debian's files, tiny on-disk copies of the others.

No test downloads: the MNIST, CIFAR-10 and SVHN loaders read small files that the tests write in
the same on-disk formats, and the download path is exercised with torchvision stubbed out.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from distdd_nas.data import (
    DATASETS,
    FASHION_MNIST_SYSTEM_DIRS,
    DatasetSplits,
    ImageDataset,
    load_dataset,
    read_idx,
)
from distdd_nas.errors import ConfigError, DataError

IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x00000803/0x00000801, big-endian dims, payload."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def write_mnist_like(directory: Path, *, gz: bool, seed: int, n: int = 12) -> dict[str, tuple]:
    """Tiny train/t10k IDX files (n and n//2 28×28 images); returns the raw arrays per part."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, count in (("train", n), ("t10k", n // 2)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{IDX_STEMS[part][0]}{suffix}", images)
        write_idx(directory / f"{IDX_STEMS[part][1]}{suffix}", labels)
        arrays[part] = (images, labels)
    return arrays


def raw_pixels(data: ImageDataset) -> np.ndarray:
    """Images mapped back to 0..255 pixel values."""
    return np.rint(data.denormalise().numpy() * 255).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# digits and the generic contract
# ---------------------------------------------------------------------------------------------


def test_digits_shapes_classes_and_stratified_split() -> None:
    splits = load_dataset("digits", seed=0)
    train, test = splits.train, splits.test
    assert len(train) + len(test) == 1797 and len(test) == round(0.25 * 1797)
    assert train.images.shape == (len(train), 1, 8, 8) and train.input_shape == (1, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.num_classes == test.num_classes == 10
    per_class = np.bincount(np.concatenate([train.labels.numpy(), test.labels.numpy()]))
    np.testing.assert_allclose(np.bincount(test.labels.numpy()), 0.25 * per_class, atol=1)
    # normalised with the train part's statistics; pixels were 0..16 scaled to [0, 1]
    assert abs(train.images.mean().item()) < 1e-4 and abs(train.images.std().item() - 1) < 1e-3
    pixels = train.denormalise() * 16
    assert torch.allclose(pixels, pixels.round(), atol=1e-4) and pixels.max().item() == 16


def test_loading_is_deterministic_in_the_seed() -> None:
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(
        a.test.labels, b.test.labels
    )
    assert not torch.equal(a.test.images, c.test.images)


def test_max_train_is_an_exact_stratified_seeded_subsample() -> None:
    full = load_dataset("digits", seed=0).train
    small = load_dataset("digits", seed=0, max_train=200)
    assert len(small.train) == 200 and len(small.test) == 449
    share = np.bincount(full.labels.numpy()) / len(full)
    np.testing.assert_allclose(np.bincount(small.train.labels.numpy()), 200 * share, atol=1)
    again = load_dataset("digits", seed=0, max_train=200)
    assert torch.equal(small.train.images, again.train.images)
    other = load_dataset("digits", seed=1, max_train=200)
    assert not torch.equal(small.train.images, other.train.images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "imagenet"},
            "unknown dataset 'imagenet'; set data.name to one of " + ", ".join(DATASETS),
        ),
        ({"name": "digits", "test_fraction": 0.0}, r"data.test_fraction=0.0 .*0 < f < 1"),
        ({"name": "digits", "test_fraction": 1.0}, r"data.test_fraction=1.0 .*0 < f < 1"),
        ({"name": "digits", "max_train": 0}, r"data.max_train=0 .*integer >= 1"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs: dict, message: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=message):
        load_dataset(name, **kwargs)


def test_image_dataset_views_and_validation() -> None:
    data = load_dataset("digits").test
    part = data.subset(np.array([5, 0, 7]))
    assert len(part) == 3 and torch.equal(part.images[1], data.images[0])
    assert torch.equal(part.labels, data.labels[[5, 0, 7]])
    relabelled = data.with_labels(np.zeros(len(data), dtype=np.int32))
    assert relabelled.labels.dtype == torch.int64 and int(relabelled.labels.sum()) == 0
    assert relabelled.images is data.images
    with pytest.raises(DataError, match="one label per image"):
        data.with_labels(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match="images N×C×H×W"):
        ImageDataset(
            name="x",
            images=torch.zeros(2, 8, 8),
            labels=torch.zeros(2, dtype=torch.long),
            classes=("a",),
            mean=(0.0,),
            std=(1.0,),
        )
    with pytest.raises(DataError, match="one mean and one std per channel"):
        ImageDataset(
            name="x",
            images=torch.zeros(2, 3, 8, 8),
            labels=torch.zeros(2, dtype=torch.long),
            classes=("a",),
            mean=(0.0,),
            std=(1.0,),
        )


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion() -> DatasetSplits:
    if not any((d / "train-images-idx3-ubyte.gz").is_file() for d in FASHION_MNIST_SYSTEM_DIRS):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return load_dataset("fashion_mnist")


def test_fashion_mnist_from_the_debian_files(fashion: DatasetSplits) -> None:
    train, test = fashion.train, fashion.test
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(train.labels.numpy()).tolist() == [6000] * 10
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert (train.mean, train.std) == ((0.2860,), (0.3530,))
    raw = train.denormalise()
    assert raw.min().item() > -1e-5 and raw.max().item() < 1 + 1e-5
    assert abs(raw.mean().item() - 0.2860) < 5e-4 and abs(raw.std().item() - 0.3530) < 5e-4


# ---------------------------------------------------------------------------------------------
# IDX files written by the tests: layouts, search order, corruption
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat-gz", "flat-raw", "torchvision"])
def test_fashion_mnist_from_root_in_each_layout(tmp_path: Path, layout: str) -> None:
    directory = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays = write_mnist_like(directory, gz=layout != "flat-raw", seed=1)
    splits = load_dataset("fashion_mnist", root=tmp_path, system_dirs=())
    for data, part in ((splits.train, "train"), (splits.test, "t10k")):
        images, labels = arrays[part]
        assert data.images.shape == (len(images), 1, 28, 28)
        np.testing.assert_array_equal(raw_pixels(data)[:, 0], images)
        np.testing.assert_array_equal(data.labels.numpy(), labels)


def test_a_set_root_is_used_and_never_silently_replaced(tmp_path: Path) -> None:
    ours = write_mnist_like(tmp_path / "root", gz=True, seed=1)
    write_mnist_like(tmp_path / "system", gz=True, seed=2)
    splits = load_dataset(
        "fashion_mnist", root=tmp_path / "root", system_dirs=[tmp_path / "system"]
    )
    np.testing.assert_array_equal(raw_pixels(splits.train)[:, 0], ours["train"][0])
    # an empty or partial root is an error naming it, not a fall back to the system copy
    (tmp_path / "empty").mkdir()
    partial = tmp_path / "partial"
    write_mnist_like(partial, gz=True, seed=4)
    next(partial.glob("t10k-labels*")).unlink()
    for root in (tmp_path / "empty", partial):
        with pytest.raises(DataError, match=rf"fashion_mnist not found.*{root}"):
            load_dataset("fashion_mnist", root=root, system_dirs=[tmp_path / "system"])
    # without a root the system directories are used
    splits = load_dataset("fashion_mnist", system_dirs=[tmp_path / "system"])
    assert len(splits.train) > 0


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", root=tmp_path, system_dirs=())
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and str(tmp_path / "FashionMNIST" / "raw") in message
    for fix in ("apt-get install dataset-fashion-mnist", "data.root=DIR", "data.download=true"):
        assert fix in message


def test_a_partial_directory_is_not_used(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, gz=True, seed=0)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="fashion_mnist not found"):
        load_dataset("fashion_mnist", root=tmp_path, system_dirs=())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: gzip.compress(b[:-100], mtime=0), "is truncated"),
        (lambda b: gzip.compress(b + b"\0", mtime=0), "longer than its header says"),
        (lambda b: gzip.compress(b"\0\0\x0d\x03" + b[4:], mtime=0), "bad magic number"),
        (lambda b: gzip.compress(b, mtime=0)[:-30], "cannot read"),
        (lambda b: gzip.compress(b, mtime=0)[:40] + b"garbage" * 20, "cannot read"),
        (lambda b: gzip.compress(b[:10], mtime=0), "truncated inside its IDX header"),
    ],
)
def test_corrupt_idx_files_are_data_errors_naming_the_file(
    tmp_path: Path, damage: object, message: str
) -> None:
    write_mnist_like(tmp_path, gz=True, seed=0)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    target.write_bytes(damage(gzip.decompress(target.read_bytes())))  # type: ignore[operator]
    with pytest.raises(DataError, match=message) as err:
        load_dataset("fashion_mnist", root=tmp_path, system_dirs=())
    assert str(target) in str(err.value) and "obtain" in str(err.value)


def test_mismatched_or_out_of_range_idx_pairs_are_data_errors(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, gz=False, seed=0)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="do not form an images/labels pair"):
        load_dataset("fashion_mnist", root=tmp_path, system_dirs=())
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels outside 0..9"):
        load_dataset("fashion_mnist", root=tmp_path, system_dirs=())


def test_read_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, array)), array)


def test_mnist_from_a_torchvision_layout(tmp_path: Path) -> None:
    arrays = write_mnist_like(tmp_path / "MNIST" / "raw", gz=False, seed=5, n=20)
    splits = load_dataset("mnist", root=tmp_path)
    assert splits.train.images.shape == (20, 1, 28, 28) and splits.test.images.shape[0] == 10
    assert (splits.train.mean, splits.train.std) == ((0.1307,), (0.3081,))
    np.testing.assert_array_equal(raw_pixels(splits.train)[:, 0], arrays["train"][0])
    np.testing.assert_array_equal(splits.test.labels.numpy(), arrays["t10k"][1])


def test_mnist_missing_names_root_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist not found.*data.root=DIR.*data.download=true"):
        load_dataset("mnist", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# downloads (torchvision stubbed: nothing leaves the machine)
# ---------------------------------------------------------------------------------------------


def test_download_fetches_into_root_then_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets as tvd

    calls = []

    def fake_fashion(root: str, *, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_mnist_like(Path(root) / "FashionMNIST" / "raw", gz=True, seed=9)

    monkeypatch.setattr(tvd, "FashionMNIST", fake_fashion)
    splits = load_dataset("fashion_mnist", root=tmp_path, download=True, system_dirs=())
    assert calls == [(str(tmp_path), True, True)]
    assert len(splits.train) == 12


def test_download_offline_is_a_data_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets as tvd

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    with pytest.raises(DataError, match=r"downloading fashion_mnist .*failed.*offline"):
        load_dataset("fashion_mnist", root=tmp_path, download=True, system_dirs=())
    with pytest.raises(ConfigError, match=r"data\.root=DIR"):
        load_dataset("fashion_mnist", download=True, system_dirs=())


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's python release) and SVHN (.mat), written tiny by the tests
# ---------------------------------------------------------------------------------------------


def write_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py (2 images per batch); torchvision's md5 table points at it.

    torchvision verifies the md5 sums of the real release before unpickling, so the test
    registers the sums of its own tiny files.
    """
    import torchvision.datasets as tvd

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    data = rng.integers(0, 256, size=(len(names), 2, 3072), dtype=np.uint8)
    labels = np.arange(len(names) * 2).reshape(len(names), 2) % 10

    def dump(name: str, obj: object) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(obj))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    table = [
        dump(n, {"data": d, "labels": lab.tolist()})
        for n, d, lab in zip(names, data, labels, strict=True)
    ]
    meta = dump("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    monkeypatch.setattr(tvd.CIFAR10, "train_list", table[:5])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", table[5:])
    monkeypatch.setattr(
        tvd.CIFAR10, "meta", {"filename": meta[0], "key": "label_names", "md5": meta[1]}
    )
    return {
        "train_x": data[:5].reshape(10, 3, 32, 32),
        "train_y": labels[:5].reshape(-1),
        "test_x": data[5].reshape(2, 3, 32, 32),
        "test_y": labels[5],
    }


def test_cifar10_from_a_tiny_python_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = write_cifar10(tmp_path, monkeypatch)
    splits = load_dataset("cifar10", root=tmp_path)
    assert splits.train.images.shape == (10, 3, 32, 32)
    assert splits.test.images.shape == (2, 3, 32, 32)
    assert splits.train.classes[0] == "airplane" and splits.train.num_classes == 10
    assert splits.train.mean == (0.4914, 0.4822, 0.4465)
    np.testing.assert_array_equal(raw_pixels(splits.train), expected["train_x"])
    np.testing.assert_array_equal(splits.train.labels.numpy(), expected["train_y"])
    np.testing.assert_array_equal(raw_pixels(splits.test), expected["test_x"])


def test_cifar10_missing_or_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"cifar10 not found or corrupted.*data.download=true"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match=r"data\.root=DIR"):
        load_dataset("cifar10")
    write_cifar10(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "cifar-10-batches-py"))):
        load_dataset("cifar10", root=tmp_path)


def write_svhn(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny train_32x32.mat / test_32x32.mat as SVHN ships them: X is 32×32×3×N, 0 is 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 6), ("test", 3)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # labels 1..10, where 10 means digit 0
        y[0, 0] = 10
        savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        out[split] = (x.transpose(3, 2, 0, 1), np.where(y[:, 0] == 10, 0, y[:, 0]))
    return out


def test_svhn_from_tiny_mat_files(tmp_path: Path) -> None:
    expected = write_svhn(tmp_path)
    splits = load_dataset("svhn", root=tmp_path)
    assert splits.train.images.shape == (6, 3, 32, 32)
    assert splits.test.images.shape == (3, 3, 32, 32)
    assert splits.train.std == (0.1980, 0.2010, 0.1970)
    np.testing.assert_array_equal(raw_pixels(splits.train), expected["train"][0])
    np.testing.assert_array_equal(splits.train.labels.numpy(), expected["train"][1])
    assert splits.train.labels[0].item() == 0
    np.testing.assert_array_equal(splits.test.labels.numpy(), expected["test"][1])


def test_svhn_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"svhn not found: missing .*train_32x32.mat.*download"):
        load_dataset("svhn", root=tmp_path)
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, rubbish" * 10)
    with pytest.raises(DataError, match=r"test_32x32.mat"):
        load_dataset("svhn", root=tmp_path)
