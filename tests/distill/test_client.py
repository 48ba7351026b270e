"""Client tasks: class statistics, sampling, and per-class gradients (paths vs. reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distdd_nas.data import DatasetSplits
from distdd_nas.distill.client import (
    GradientPath,
    Segment,
    class_gradients,
    class_stats,
    is_sample_independent,
    per_class_gradients,
)
from distdd_nas.errors import ConfigError
from distdd_nas.federation import Message
from distdd_nas.models import ArchSpec, build_model, get_parameters
from tests.distill.conftest import TINY, make_clients

ARCHS = [
    (TINY, (1, 8, 8)),
    (ArchSpec(depth=3, width=8, norm="layer", pool="max", act="sigmoid"), (1, 28, 28)),
    (ArchSpec(depth=2, width=8, norm="group", act="leakyrelu"), (3, 16, 16)),
    (ArchSpec(depth=2, width=8, norm="none", pool="none"), (1, 8, 8)),
    (ArchSpec(depth=2, width=8, norm="batch"), (1, 8, 8)),  # BatchNorm: reference path
    (ArchSpec(family="mlp", depth=2, hidden=16), (1, 8, 8)),
    (ArchSpec(family="lenet"), (1, 28, 28)),
]


def reference_rows(net: torch.nn.Module, x: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
    """One plain forward/backward per class, as DC computes real-data gradients."""
    rows = []
    for s in segments:
        y = torch.full((s.stop - s.start,), s.label)
        g = torch.autograd.grad(
            F.cross_entropy(net(x[s.start : s.stop]), y), list(net.parameters())
        )
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


@pytest.mark.parametrize("path", ["micro", "plain"])
@pytest.mark.parametrize(("arch", "shape"), ARCHS, ids=[a.short_name() for a, _ in ARCHS])
def test_per_class_gradients_equal_one_backward_per_class(
    arch: ArchSpec,
    shape: tuple[int, int, int],
    path: GradientPath,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import distdd_nas.distill.client as client_module

    monkeypatch.setattr(client_module, "MICRO_BATCH", 6)  # class 9 (15 rows) in 3 micro-batches
    net = build_model(arch, input_shape=shape, num_classes=10, seed=3)
    x = torch.randn(23, *shape, generator=torch.Generator().manual_seed(0))
    segments = [Segment(1, 0, 7), Segment(4, 7, 8), Segment(9, 8, 23)]
    got = per_class_gradients(net, x, segments, path=path)
    want = reference_rows(net, x, segments)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert is_sample_independent(net) == (arch.norm != "batch" or arch.family != "convnet")


def test_batchnorm_in_eval_mode_counts_as_sample_independent() -> None:
    net = build_model(
        ArchSpec(depth=2, width=8, norm="batch"), input_shape=(1, 8, 8), num_classes=10, seed=0
    )
    assert not is_sample_independent(net)
    net.eval()
    assert is_sample_independent(net)


def test_class_stats_counts_and_moments(digits: DatasetSplits) -> None:
    train = digits.train
    part = np.arange(0, 300)
    (client,) = make_clients(train, [part])
    plain = class_stats(client, Message())
    assert set(plain.arrays) == {"counts"}
    labels = train.labels.numpy()[part]
    np.testing.assert_array_equal(plain.arrays["counts"], np.bincount(labels, minlength=10))
    full = class_stats(client, Message(config={"moments": True}))
    x = train.images[torch.as_tensor(part)].reshape(len(part), -1).double().numpy()
    for c in range(10):
        np.testing.assert_allclose(full.arrays["sum"][c], x[labels == c].sum(0), rtol=1e-10)
        np.testing.assert_allclose(
            full.arrays["sumsq"][c], (x[labels == c] ** 2).sum(0), rtol=1e-10
        )


def _request(arch: ArchSpec, take: np.ndarray, seed: int = 7) -> Message:
    net = build_model(arch, input_shape=(1, 8, 8), num_classes=10, seed=1)
    return Message(
        arrays={**get_parameters(net), "take": take.astype(np.int64)},
        config={"arch": json.dumps(arch.to_dict()), "seed": seed},
    )


def test_class_gradients_sends_only_held_classes_with_counts(digits: DatasetSplits) -> None:
    labels = digits.train.labels.numpy()
    part = np.flatnonzero(np.isin(labels, [2, 5, 7]))
    (client,) = make_clients(digits.train, [part])
    take = np.full(10, 20)
    take[7] = 0  # the server does not ask for class 7
    reply = class_gradients(client, _request(TINY, take))
    counts = reply.arrays["counts"]
    np.testing.assert_array_equal(np.flatnonzero(counts), [2, 5])
    assert counts[2] == counts[5] == 20 and counts.dtype == np.int64
    dim = sum(
        p.numel() for p in build_model(TINY, input_shape=(1, 8, 8), num_classes=10).parameters()
    )
    assert reply.arrays["grads"].shape == (2, dim) and reply.arrays["grads"].dtype == np.float32


def test_class_gradients_are_seeded_and_take_all_when_the_cap_binds(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(400)])
    take = np.full(10, 5)
    a = class_gradients(client, _request(TINY, take, seed=1)).arrays["grads"]
    b = class_gradients(client, _request(TINY, take, seed=1)).arrays["grads"]
    c = class_gradients(client, _request(TINY, take, seed=2)).arrays["grads"]
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    big = np.full(10, 10_000)
    d = class_gradients(client, _request(TINY, big, seed=1)).arrays
    e = class_gradients(client, _request(TINY, big, seed=2)).arrays
    np.testing.assert_array_equal(d["counts"], np.bincount(client.train_labels(), minlength=10))
    assert d["grads"].tobytes() == e["grads"].tobytes()  # all images: the seed does not matter


def test_class_gradients_rejects_a_malformed_take(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(100)])
    with pytest.raises(ConfigError, match="'take' must hold one count per class"):
        class_gradients(client, _request(TINY, np.full(3, 5)))


def test_client_without_requested_classes_sends_an_empty_matrix(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(100)])
    reply = class_gradients(client, _request(TINY, np.zeros(10, dtype=np.int64)))
    assert reply.arrays["grads"].shape[0] == 0 and not reply.arrays["counts"].any()


def test_unknown_gradient_path_is_a_config_error() -> None:
    net = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=0)
    with pytest.raises(ConfigError, match="unknown gradient path 'fast'"):
        per_class_gradients(net, torch.zeros(2, 1, 8, 8), [Segment(0, 0, 2)], path="fast")  # type: ignore[arg-type]


def test_float16_upload_is_the_float32_gradient_rounded(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(400)])
    take = np.full(10, 8)
    full = class_gradients(client, _request(TINY, take, seed=3)).arrays["grads"]
    msg = _request(TINY, take, seed=3)
    half_msg = Message(arrays=msg.arrays, config={**msg.config, "grad_dtype": "float16"})
    half = class_gradients(client, half_msg).arrays["grads"]
    assert half.dtype == np.float16 and half.nbytes * 2 == full.nbytes
    np.testing.assert_array_equal(half, full.astype(np.float16))


def test_unknown_grad_dtype_is_a_config_error(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(100)])
    msg = _request(TINY, np.full(10, 2))
    bad = Message(arrays=msg.arrays, config={**msg.config, "grad_dtype": "int3"})
    with pytest.raises(ConfigError, match="grad_dtype 'int3' is unsupported; use float32 or"):
        class_gradients(client, bad)
