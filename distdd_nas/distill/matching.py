"""Gradient-matching distances D(g_syn, g_real) over lists of per-parameter gradients.

``layerwise_cosine`` is DC's distance: each weight tensor is viewed as (out, rest) — a conv
weight (out, in, k, k) as (out, in·k·k), a linear weight (out, in) as it is — and contributes
Σ_rows 1 − ⟨a, b⟩ / (‖a‖‖b‖ + 1e-6). One-dimensional tensors (biases, norm affine parameters)
contribute nothing. ``mse`` and ``cosine`` compare the concatenated flat gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from distdd_nas.errors import ConfigError

EPS = 1e-6

Grads = Sequence[torch.Tensor]


def layerwise_cosine(syn: Grads, real: Grads) -> torch.Tensor:
    """DC's per-output-row cosine distance summed over weight tensors (1-D tensors ignored)."""
    total = syn[0].new_zeros(())
    for gs, gr in zip(syn, real, strict=True):
        if gs.dim() == 1:
            continue
        a = gs.reshape(gs.shape[0], -1)
        b = gr.reshape(gr.shape[0], -1)
        cos = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
        total = total + (1.0 - cos).sum()
    return total


def _flat(grads: Grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def mse(syn: Grads, real: Grads) -> torch.Tensor:
    """Squared L2 distance between the concatenated gradients."""
    return ((_flat(syn) - _flat(real)) ** 2).sum()


def cosine(syn: Grads, real: Grads) -> torch.Tensor:
    """1 − cosine similarity of the concatenated gradients."""
    a, b = _flat(syn), _flat(real)
    return 1.0 - (a * b).sum() / (a.norm() * b.norm() + EPS)


#: Gradient-matching distances by name (``distill.distance``).
DISTANCES: dict[str, Callable[[Grads, Grads], torch.Tensor]] = {
    "layerwise_cosine": layerwise_cosine,
    "mse": mse,
    "cosine": cosine,
}


def get_distance(name: str) -> Callable[[Grads, Grads], torch.Tensor]:
    """Distance function by name (a key of :data:`DISTANCES`)."""
    distance = DISTANCES.get(name)
    if distance is None:
        raise ConfigError(f"unknown distance {name!r}; choose one of {', '.join(DISTANCES)}")
    return distance
