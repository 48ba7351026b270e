"""Gradient-matching distances against slow references with DC's semantics."""

from __future__ import annotations

import math

import pytest
import torch

from distdd_nas.distill.matching import cosine, get_distance, layerwise_cosine, mse
from distdd_nas.errors import ConfigError


def _grads(seed: int) -> list[torch.Tensor]:
    """Gradient-shaped tensors: conv weight, conv bias, norm affine, linear weight and bias,
    a LayerNorm-style 3-D weight."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (4,), (4,), (5, 16), (5,), (4, 2, 2)]
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def slow_layerwise_cosine(syn: list[torch.Tensor], real: list[torch.Tensor]) -> float:
    """DC's distance_wb, row by row in plain Python."""
    total = 0.0
    for gs, gr in zip(syn, real, strict=True):
        if gs.dim() == 1:
            continue
        rows_s = gs.reshape(gs.shape[0], -1).tolist()
        rows_r = gr.reshape(gr.shape[0], -1).tolist()
        for a, b in zip(rows_s, rows_r, strict=True):
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            na = math.sqrt(sum(x * x for x in a))
            nb = math.sqrt(sum(y * y for y in b))
            total += 1.0 - dot / (na * nb + 1e-6)
    return total


def test_layerwise_cosine_matches_row_by_row_reference() -> None:
    syn, real = _grads(0), _grads(1)
    assert float(layerwise_cosine(syn, real)) == pytest.approx(
        slow_layerwise_cosine(syn, real), rel=1e-12
    )


def test_layerwise_cosine_ignores_one_dimensional_tensors() -> None:
    syn, real = _grads(0), _grads(1)
    changed = [g if g.dim() > 1 else torch.randn_like(g) * 100 for g in syn]
    assert float(layerwise_cosine(changed, real)) == float(layerwise_cosine(syn, real))
    only_1d = [g for g in syn if g.dim() == 1]
    assert float(layerwise_cosine(only_1d, only_1d[::-1])) == 0.0


def test_layerwise_cosine_is_zero_for_parallel_rows_and_uses_eps() -> None:
    syn = _grads(0)
    scaled = [3.0 * g for g in syn]
    assert float(layerwise_cosine(syn, scaled)) == pytest.approx(0.0, abs=1e-5)
    zeros = [torch.zeros_like(g) for g in syn]
    rows = sum(g.shape[0] for g in syn if g.dim() > 1)
    assert float(layerwise_cosine(zeros, syn)) == pytest.approx(rows)  # eps: no NaN


def test_mse_and_cosine_match_hand_formulas() -> None:
    syn, real = _grads(2), _grads(3)
    a = torch.cat([g.reshape(-1) for g in syn])
    b = torch.cat([g.reshape(-1) for g in real])
    assert float(mse(syn, real)) == pytest.approx(float(((a - b) ** 2).sum()), rel=1e-12)
    expected = 1.0 - float(a @ b) / (float(a.norm()) * float(b.norm()) + 1e-6)
    assert float(cosine(syn, real)) == pytest.approx(expected, rel=1e-12)


def test_distances_are_differentiable_in_the_synthetic_gradients() -> None:
    syn = [g.clone().requires_grad_(True) for g in _grads(4)]
    real = _grads(5)
    for name in ("layerwise_cosine", "mse", "cosine"):
        (grad,) = torch.autograd.grad(get_distance(name)(syn, real), [syn[0]])
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unknown_distance_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown distance 'l1'; choose one of layerwise"):
        get_distance("l1")
