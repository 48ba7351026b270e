"""Tests of distdd_nas.models: DC semantics, the 720-network space, seeding and transport."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from distdd_nas.errors import ConfigError
from distdd_nas.models import (
    ACTIVATIONS,
    FAMILIES,
    NORMS,
    POOLS,
    ArchSpec,
    build_model,
    count_parameters,
    get_parameters,
    init_model,
    set_parameters,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run these tiny models single-threaded: on a busy 2-core box, intra-op threads waiting on a
    descheduled sibling make each op ~8 ms instead of ~0.1 ms (25× slower tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


INPUT_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
GRID = list(
    itertools.product([1, 2, 3, 4], [32, 64, 128, 256], ACTIVATIONS, NORMS, POOLS)
)  # DC's NAS space


def convnet_reference_count(
    *, depth: int, width: int, norm: str, pool: str, shape: tuple[int, int, int], classes: int
) -> int:
    """Closed-form parameter count of DC's ConvNet, written independently of the model code."""
    channels, h, w = shape
    if (channels, h, w) == (1, 28, 28):
        h = w = 32  # padding 3 in the first conv
    total = 0
    for _ in range(depth):
        total += channels * width * 9 + width  # conv 3×3 weight + bias
        if norm in ("batch", "instance", "group"):
            total += 2 * width  # per-channel gamma, beta
        elif norm == "layer":
            total += 2 * width * h * w  # gamma, beta over (C, H, W)
        channels = width
        if pool != "none":
            h, w = h // 2, w // 2
    return total + channels * h * w * classes + classes


# ----------------------------------------------------------------------------- DC parameter counts


@pytest.mark.parametrize(
    ("width", "shape", "expected"),
    [
        # conv1 3·128·9+128 + 2 × (128·128·9+128) + 3 GroupNorms 2·128 + fc 128·4·4·10+10
        (128, (3, 32, 32), 3584 + 2 * 147584 + 3 * 256 + 20490),
        # 1×28×28 is padded to 32×32 → 4×4 features: 64·9+64 + 2·(64·64·9+64) + 3·128 + 64·16·10+10
        (64, (1, 28, 28), 640 + 2 * 36928 + 3 * 128 + 10250),
        # 32·9+32 + 2·(32·32·9+32) + 3·64 + 32·16·10+10
        (32, (1, 28, 28), 320 + 2 * 9248 + 3 * 64 + 5130),
    ],
)
def test_dc_convnet_parameter_counts(
    width: int, shape: tuple[int, int, int], expected: int
) -> None:
    model = build_model(ArchSpec(width=width), input_shape=shape, num_classes=10, seed=0)
    assert count_parameters(model) == expected


def test_dc_reference_numbers() -> None:
    model = build_model(ArchSpec(), input_shape=(3, 32, 32), num_classes=10, seed=0)
    assert count_parameters(model) == 320_010
    assert model.feature_shape == (128, 4, 4)  # type: ignore[attr-defined]
    mnist = build_model(ArchSpec(), input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert mnist.feature_shape == (128, 4, 4)  # type: ignore[attr-defined]
    assert mnist.features[0].padding == (3, 3)  # type: ignore[index]
    # Only the first conv of a 1×28×28 net is padded by 3; 3-channel or other sizes use 1.
    assert mnist.features[4].padding == (1, 1)  # type: ignore[index]
    cifar = build_model(ArchSpec(), input_shape=(3, 28, 28), num_classes=10, seed=0)
    assert cifar.features[0].padding == (1, 1)  # type: ignore[index]


def test_dc_norm_layers_are_dc_semantics() -> None:
    def norm_of(norm: str) -> nn.Module:
        model = build_model(
            ArchSpec(norm=norm, width=32), input_shape=(3, 32, 32), num_classes=10, seed=0
        )
        return model.features[1]  # type: ignore[index,no-any-return]

    inst = norm_of("instance")
    assert isinstance(inst, nn.GroupNorm) and (inst.num_groups, inst.num_channels) == (32, 32)
    assert not list(inst.buffers())  # no running statistics: FL friendly
    group = norm_of("group")
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 4 and group.affine
    layer = norm_of("layer")
    assert isinstance(layer, nn.LayerNorm) and layer.normalized_shape == (32, 32, 32)
    batch = norm_of("batch")
    assert isinstance(batch, nn.BatchNorm2d) and batch.affine and batch.track_running_stats
    assert isinstance(norm_of("none"), nn.Identity)
    leaky = build_model(ArchSpec(act="leakyrelu"), input_shape=(3, 32, 32), num_classes=10)
    assert leaky.features[2].negative_slope == 0.01  # type: ignore[index]


def test_lenet_and_mlp_counts() -> None:
    # DC's LeNet on MNIST = LeNet-5: 156 + 2416 + 16·5·5·120+120 + 120·84+84 + 84·10+10.
    lenet = build_model(ArchSpec(family="lenet"), input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert count_parameters(lenet) == 156 + 2416 + 48120 + 10164 + 850 == 61_706
    assert lenet.feature_shape == (16, 5, 5)  # type: ignore[attr-defined]
    cifar = build_model(ArchSpec(family="lenet"), input_shape=(3, 32, 32), num_classes=10, seed=0)
    assert cifar.feature_shape == (16, 5, 5)  # type: ignore[attr-defined]
    mlp = build_model(
        ArchSpec(family="mlp", depth=2, hidden=128),
        input_shape=(1, 28, 28),
        num_classes=10,
        seed=0,
    )
    assert count_parameters(mlp) == (784 * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)


# ------------------------------------------------------------------------------- shapes & forward


@pytest.mark.parametrize("shape", INPUT_SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_output_shape_every_family(family: str, shape: tuple[int, int, int]) -> None:
    model = build_model(
        ArchSpec(family=family, width=16, hidden=32), input_shape=shape, num_classes=7, seed=0
    )
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def _forward_backward(spec: ArchSpec, shape: tuple[int, int, int]) -> None:
    model = build_model(spec, input_shape=shape, num_classes=10, seed=0)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    loss = nn.functional.cross_entropy(model(x), torch.arange(4))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "spec",
    list(  # dict.fromkeys drops the duplicate default (relu, instance, avg) spec
        dict.fromkeys(
            [ArchSpec(width=16, act=a) for a in ACTIVATIONS]
            + [ArchSpec(width=16, norm=n) for n in NORMS]
            + [ArchSpec(width=16, pool=p) for p in POOLS]
            + [ArchSpec(family="mlp", hidden=16, act=a) for a in ACTIVATIONS]
            + [ArchSpec(family="lenet", act=a) for a in ACTIVATIONS]
        )
    ),
    ids=lambda s: s.short_name(),
)
def test_each_option_runs_forward_and_backward(spec: ArchSpec) -> None:
    _forward_backward(spec, (1, 28, 28))


def test_full_720_grid_builds_with_dc_counts() -> None:
    assert len(GRID) == 720
    names = set()
    with torch.device("meta"):  # construct + count without allocating or initialising weights
        for depth, width, act, norm, pool in GRID:
            spec = ArchSpec(depth=depth, width=width, act=act, norm=norm, pool=pool)
            names.add(spec.short_name())
            model = build_model(spec, input_shape=(1, 28, 28), num_classes=10)
            expected = convnet_reference_count(
                depth=depth, width=width, norm=norm, pool=pool, shape=(1, 28, 28), classes=10
            )
            assert count_parameters(model) == expected, spec.short_name()
    assert len(names) == 720


def test_grid_sample_runs_forward() -> None:
    sample = random.Random(0).sample(GRID, 10)
    for depth, width, act, norm, pool in sample:
        spec = ArchSpec(depth=depth, width=width, act=act, norm=norm, pool=pool)
        model = build_model(spec, input_shape=(1, 28, 28), num_classes=10, seed=1)
        out = model(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10), spec.short_name()


# --------------------------------------------------------------------------------------- seeding


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_init_is_bit_identical_and_ignores_global_rng(family: str) -> None:
    spec = ArchSpec(family=family, width=16, norm="batch", hidden=32)
    torch.manual_seed(123)
    first = _state(build_model(spec, input_shape=(1, 28, 28), num_classes=10, seed=42))
    torch.manual_seed(999)
    torch.rand(1000)
    second = _state(build_model(spec, input_shape=(1, 28, 28), num_classes=10, seed=42))
    assert _same(first, second)
    other = _state(build_model(spec, input_shape=(1, 28, 28), num_classes=10, seed=43))
    assert not any(
        torch.equal(first[k], other[k]) for k in first if k.endswith("weight") and "0" in k
    )
    assert not _same(first, other)


def test_seeded_build_leaves_global_rng_untouched() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_model(ArchSpec(), input_shape=(3, 32, 32), num_classes=10, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("norm", ["batch", "layer", "instance"])
def test_seeded_init_equals_pytorch_default_init(norm: str) -> None:
    """init_model reproduces PyTorch's default init exactly (same distributions, same draws)."""
    spec = ArchSpec(width=16, norm=norm)
    torch.manual_seed(11)
    default = _state(build_model(spec, input_shape=(3, 32, 32), num_classes=10))
    seeded = _state(build_model(spec, input_shape=(3, 32, 32), num_classes=10, seed=11))
    assert _same(default, seeded)


def test_init_model_resets_norms_and_rejects_unknown_modules() -> None:
    model = build_model(ArchSpec(width=8, norm="batch"), input_shape=(1, 8, 8), num_classes=3)
    model(torch.randn(4, 1, 8, 8))  # train-mode forward moves the running statistics
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(5.0)
    init_model(model, generator=torch.Generator().manual_seed(0))
    bn = model.features[1]  # type: ignore[index]
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))
    assert torch.equal(bn.running_mean, torch.zeros(8)) and int(bn.num_batches_tracked) == 0
    conv = model.features[0]  # type: ignore[index]
    assert float(conv.weight.detach().abs().max()) <= 1 / 3  # U(±1/√fan_in), fan_in = 1·3·3
    with pytest.raises(TypeError, match="Embedding"):
        init_model(nn.Sequential(nn.Embedding(3, 2)), generator=torch.Generator())


# ------------------------------------------------------------------------------------- transport


def test_get_set_parameters_round_trip_with_buffers() -> None:
    spec = ArchSpec(width=8, norm="batch")
    src = build_model(spec, input_shape=(1, 28, 28), num_classes=10, seed=1)
    src(torch.randn(4, 1, 28, 28))  # non-trivial running stats and num_batches_tracked
    params = get_parameters(src)
    assert list(params) == list(src.state_dict())  # deterministic (state_dict) order
    assert "features.1.running_mean" in params
    assert params["features.1.num_batches_tracked"].dtype == np.int64
    assert params["features.0.weight"].dtype == np.float32
    dst = build_model(spec, input_shape=(1, 28, 28), num_classes=10, seed=2)
    weight_obj = dst.features[0].weight  # type: ignore[index]
    set_parameters(dst, params)
    assert _same(_state(src), _state(dst))
    assert dst.features[0].weight is weight_obj  # type: ignore[index]  # in place: optimizers ok
    params["features.0.weight"][...] = 0.0  # the arrays are copies
    assert float(src.features[0].weight.detach().abs().sum()) > 0  # type: ignore[index]


def test_set_parameters_errors_name_the_key_and_change_nothing() -> None:
    model = build_model(ArchSpec(width=8), input_shape=(1, 8, 8), num_classes=3, seed=0)
    before = _state(model)
    good = get_parameters(
        build_model(ArchSpec(width=8), input_shape=(1, 8, 8), num_classes=3, seed=1)
    )
    missing = {k: v for k, v in good.items() if k != "classifier.bias"}
    with pytest.raises(ConfigError, match=r"missing keys \['classifier.bias'\]"):
        set_parameters(model, missing)
    with pytest.raises(ConfigError, match=r"unexpected keys.*'extra.weight'"):
        set_parameters(model, {**good, "extra.weight": np.zeros(1, np.float32)})
    wrong = {**good, "classifier.weight": np.zeros((3, 7), np.float32)}
    with pytest.raises(ConfigError, match=r"'classifier.weight' has shape \(3, 7\)"):
        set_parameters(model, wrong)
    assert _same(before, _state(model))  # failed calls are atomic


# --------------------------------------------------------------------------------- spec validity


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"act": "swish"}, r"act='swish' is invalid; use one of: relu, leakyrelu, sigmoid"),
        ({"depth": 0}, r"depth=0 is invalid; use an integer >= 1"),
        ({"width": 0}, r"width=0 is invalid; use an integer >= 1"),
        ({"hidden": -3}, r"hidden=-3 is invalid"),
        ({"depth": 2.0}, r"depth=2.0 is invalid"),
        ({"depth": True}, r"depth=True is invalid"),
        ({"family": "resnet"}, r"family='resnet' is invalid; use one of: convnet, mlp, lenet"),
        ({"norm": "batchnorm"}, r"norm='batchnorm' is invalid; use one of: none, batch"),
        ({"pool": "min"}, r"pool='min' is invalid; use one of: none, max, avg"),
        ({"norm": "group", "width": 30}, r"width=30 is invalid with norm='group'.*multiple of 4"),
    ],
)
def test_invalid_spec_raises_config_error(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        ArchSpec(**kwargs)  # type: ignore[arg-type]


def test_spec_dict_round_trip_and_names() -> None:
    spec = ArchSpec(depth=2, width=np.int64(64), act="sigmoid", norm="layer", pool="max")  # type: ignore[arg-type]
    assert type(spec.width) is int
    d = spec.to_dict()
    assert d == {
        "family": "convnet",
        "depth": 2,
        "width": 64,
        "act": "sigmoid",
        "norm": "layer",
        "pool": "max",
        "hidden": 128,
    }
    assert ArchSpec.from_dict(d) == spec and hash(ArchSpec.from_dict(d)) == hash(spec)
    assert ArchSpec.from_dict({}) == ArchSpec()
    assert ArchSpec().short_name() == "ConvNet-d3w128-relu-instance-avg"
    assert ArchSpec(family="mlp", depth=2, hidden=64).short_name() == "MLP-d2h64-relu"
    assert ArchSpec(family="lenet", act="sigmoid").short_name() == "LeNet-sigmoid"
    with pytest.raises(ConfigError, match=r"unknown architecture field.*channels; valid fields"):
        ArchSpec.from_dict({"depth": 3, "channels": 3})
    # canonical(): fields a family ignores do not distinguish networks
    assert ArchSpec(family="mlp", width=32).canonical() == ArchSpec(family="mlp").canonical()
    assert ArchSpec(width=32).canonical() != ArchSpec().canonical()


def test_depth_too_deep_for_input_raises() -> None:
    with pytest.raises(ConfigError, match=r"depth 4 .*8×8 input.*use depth <= 3 or pool='none'"):
        build_model(ArchSpec(depth=4), input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match="depth 4"):
        build_model(ArchSpec(depth=4, pool="max"), input_shape=(1, 8, 8), num_classes=10, seed=0)
    # the fixes the message proposes both work
    build_model(ArchSpec(depth=3), input_shape=(1, 8, 8), num_classes=10, seed=0)
    build_model(ArchSpec(depth=4, pool="none", width=8), input_shape=(1, 8, 8), num_classes=10)


def test_bad_shapes_seed_and_tiny_lenet_raise() -> None:
    with pytest.raises(ConfigError, match=r"input_shape=.*three positive integers"):
        build_model(ArchSpec(), input_shape=(28, 28), num_classes=10)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_classes=0 is invalid"):
        build_model(ArchSpec(), input_shape=(1, 28, 28), num_classes=0)
    with pytest.raises(ConfigError, match="seed=-1 is invalid"):
        build_model(ArchSpec(), input_shape=(1, 28, 28), num_classes=10, seed=-1)
    with pytest.raises(ConfigError, match=r"LeNet needs an input of at least 4×4 pixels, got 3×3"):
        build_model(ArchSpec(family="lenet"), input_shape=(1, 3, 3), num_classes=10)
    tiny = build_model(ArchSpec(family="lenet"), input_shape=(1, 4, 4), num_classes=2, seed=0)
    assert tiny(torch.randn(1, 1, 4, 4)).shape == (1, 2)
