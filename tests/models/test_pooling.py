"""AvgPool2x2 has nn.AvgPool2d(2, 2)'s bits: forward, backward, second order, under vmap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from distdd_nas.models import pooling
from distdd_nas.models.pooling import AvgPool2x2, avg_pool_2x2

SHAPES = [(3, 4, 8, 8), (2, 3, 7, 9), (4, 6, 6), (2, 5, 32, 32), (4, 32, 32, 32), (2, 16, 45, 47)]


@pytest.fixture(autouse=True, params=["own", "native-below-threshold"])
def _path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs on both paths: the Functions for every size, and the shipped split
    (small maps through F.avg_pool2d)."""
    if request.param == "own":
        monkeypatch.setattr(pooling, "NATIVE_BELOW", 0)


def _pair(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return x.clone().requires_grad_(), x.clone().requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_and_second_order_are_bit_identical(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    a, b = _pair(shape, dtype)
    ya, yb = F.avg_pool2d(a**3, 2), avg_pool_2x2(b**3)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    (ga,) = torch.autograd.grad(ya, a, g, create_graph=True)
    (gb,) = torch.autograd.grad(yb, b, g, create_graph=True)
    assert torch.equal(ga, gb)
    w = torch.randn_like(ga)
    (ha,) = torch.autograd.grad((ga * w).sum(), a)  # second order, into the input
    (hb,) = torch.autograd.grad((gb * w).sum(), b)
    assert torch.equal(ha, hb)


def test_backward_of_the_backward_is_the_pooling_itself() -> None:
    a, b = _pair((2, 3, 9, 8), torch.float32)
    g = torch.randn(2, 3, 4, 4).requires_grad_()
    (ga,) = torch.autograd.grad(F.avg_pool2d(a, 2), a, g, create_graph=True)
    (gb,) = torch.autograd.grad(avg_pool_2x2(b), b, g, create_graph=True)
    w = torch.randn_like(ga)
    (da,) = torch.autograd.grad(ga, g, w)
    (db,) = torch.autograd.grad(gb, g, w)
    assert torch.equal(da, db)


def test_channels_last_input_and_the_module() -> None:
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    assert torch.equal(AvgPool2x2()(x), torch.nn.AvgPool2d(2, 2)(x))


def test_per_example_gradients_under_vmap_match() -> None:
    """The DP path: vmap(grad) over examples, as distill.privacy computes them."""
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    weight = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(2))

    def loss(w: torch.Tensor, xi: torch.Tensor, pool: object) -> torch.Tensor:
        return (pool(xi) * w).sum() ** 2  # type: ignore[operator]

    want = vmap(grad(loss), in_dims=(None, 0, None))(weight, x, lambda t: F.avg_pool2d(t, 2))
    got = vmap(grad(loss), in_dims=(None, 0, None))(weight, x, avg_pool_2x2)
    assert torch.equal(want, got)
