"""2×2 average pooling, bit-identical to ``nn.AvgPool2d(2, 2)`` and faster on a CPU.

PyTorch's CPU kernel for contiguous (N, C, H, W) tensors computes every output with scalar
code, and its backward zero-fills the input gradient before scattering into it; both are
memory-bound passes over the largest activation of a ConvNet (block 1: 128 KB per image at
width 32). Here the forward is three strided, vectorised additions and one division, in the
kernel's order (((x₀₀ + x₀₁) + x₁₀) + x₁₁) / 4, so every output has the same bits; the
backward copies g / 4 into each 2×2 window, with no zero-fill (the kernel's 0 + g / 4, the
same bits); the backward of that backward is this pooling again (as for ``avg_pool2d``), so
second-order gradients (DistDD's match step) match too. An odd trailing row or column gets
no output and a zero gradient, like the kernel's floor mode.

Measured on a 2-core EPYC, 1 thread: forward+backward of a (100, 32, 32, 32) map (block 1 of
ConvNet-32, DC's inner-loop batch at ipc 10) 12.0 → 6.6 ms, (16, 32, 16, 16) 0.50 → 0.35 ms;
one training step of ConvNet-32 on 100 Fashion-MNIST images 51 → 46 ms. Two autograd
Functions in Python cost ~0.15 ms a call, so maps below :data:`NATIVE_BELOW` elements
(1 image at block 1, < 8 at block 2: the quickstart's tiny class batches) take
``F.avg_pool2d`` itself (0.14 ms vs 0.20 ms for one 32×32×32 image) — the same bits either way.

Works under ``torch.func`` transforms (``generate_vmap_rule``; the per-example gradients of
:mod:`distdd_nas.distill.privacy` run under vmap).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Maps with fewer elements go through ``F.avg_pool2d`` (faster there; same bits).
NATIVE_BELOW = 65_536


class _Pool(torch.autograd.Function):
    """y = the 2×2 means of x (floor mode); backward: :class:`_Spread`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        y = x[..., 0::2, 0::2] + x[..., 0::2, 1::2]
        y += x[..., 1::2, 0::2]
        y += x[..., 1::2, 1::2]
        return y.div_(4)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.size = (inputs[0].shape[-2], inputs[0].shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _Spread.apply(grad, ctx.size)  # type: ignore[no-any-return]


class _Spread(torch.autograd.Function):
    """The adjoint of :class:`_Pool`: g / 4 in each 2×2 window of an (H, W) map; its own
    backward is :class:`_Pool`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        h, w = grad.shape[-2], grad.shape[-1]
        out = (grad / 4).repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
        if (2 * h, 2 * w) != tuple(size):
            out = F.pad(out, (0, size[1] - 2 * w, 0, size[0] - 2 * h))
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _Pool.apply(grad), None


def avg_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` with the same bits, forward and backward (module docstring)."""
    if x.numel() < NATIVE_BELOW:
        return F.avg_pool2d(x, 2)
    return _Pool.apply(x)  # type: ignore[no-any-return]


class AvgPool2x2(nn.Module):
    """Drop-in for ``nn.AvgPool2d(kernel_size=2, stride=2)`` (see :func:`avg_pool_2x2`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 2×2 means of ``x`` (…, H, W) → (…, H // 2, W // 2)."""
        return avg_pool_2x2(x)


__all__ = ["NATIVE_BELOW", "AvgPool2x2", "avg_pool_2x2"]
