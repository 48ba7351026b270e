"""Differential privacy for the class gradients a client uploads (DP-SGD style), and its ε.

With ``distill.dp_clip`` = C > 0, a client computes the gradient of every image of a class
batch separately, clips each to L2 norm ≤ C, sums them, adds Gaussian noise N(0, σ²C²I) and
divides by the batch size. Batches have a fixed size, so neighbouring datasets differ by one
*replaced* image, which moves the clipped sum by up to 2C: the accountant is given the Gaussian
mechanism with noise multiplier σ/2 (noise std over sensitivity), not σ.

Accounting (:func:`epsilon`): every matching step, a client draws ``take`` of its ``n`` images
of a class without replacement, so an image joins a step's batch with probability take/n; over
the run's T steps that is T compositions of the sampled-without-replacement Gaussian mechanism,
accounted by Google's ``dp-accounting`` RDP accountant (``SampledWithoutReplacementDpEvent``,
replace-one neighbours). A client's ε is the largest over its classes (each image belongs to one
class, so classes compose in parallel); the run reports the largest over clients. Not covered,
and said wherever ε is printed: the class counts of the census (sent in the clear), and client
sampling (``federation.fraction`` < 1 would only lower ε; it is ignored).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from distdd_nas.config import DistillSection
from distdd_nas.distill.server import batch_shares
from distdd_nas.errors import ConfigError, MissingDependencyError


def per_example_gradients(model: nn.Module, images: torch.Tensor, label: int) -> torch.Tensor:
    """Rows of ∇θ CE(f_θ(x_i), label), one per image (n × trainable parameter count)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        raise ConfigError(
            "differential privacy needs per-example gradients, which BatchNorm in training mode "
            "does not have; use model.norm = instance, group, layer or none"
        )
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return nn.functional.cross_entropy(out, torch.tensor([label]))

    per = vmap(grad(loss), in_dims=(None, 0))(params, images)
    return torch.cat([per[n].reshape(len(images), -1) for n in names], dim=1)


def private_mean(
    rows: torch.Tensor, *, clip: float, noise_multiplier: float, generator: torch.Generator
) -> torch.Tensor:
    """(Σ_i clip_C(g_i) + N(0, σ²C²)) / n for the n rows g_i."""
    norms = rows.norm(dim=1, keepdim=True)
    clipped = rows * torch.clamp(clip / norms.clamp_min(1e-12), max=1.0)
    noise = torch.randn(rows.shape[1], generator=generator, dtype=rows.dtype)
    return (clipped.sum(dim=0) + noise_multiplier * clip * noise) / len(rows)


def epsilon(
    *, noise_multiplier: float, batches: Iterable[tuple[int, int]], steps: int, delta: float
) -> float:
    """ε at ``delta`` after ``steps`` steps, the worst over ``batches`` = (n images held,
    take per step) pairs (see the module doc); ∞ without noise."""
    if noise_multiplier <= 0:
        return math.inf
    try:
        import dp_accounting
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise MissingDependencyError(
            "differential privacy needs the dp-accounting package; pip install dp-accounting"
        ) from err
    worst = 0.0
    for n, take in set(batches):
        if take <= 0:
            continue
        accountant = dp_accounting.rdp.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
        )
        gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2)  # sensitivity 2C
        event = dp_accounting.SampledWithoutReplacementDpEvent(n, min(take, n), gaussian)
        accountant.compose(event, steps)
        worst = max(worst, float(accountant.get_epsilon(delta)))
    return worst


def noise_for_epsilon(
    target: float, *, batches: Iterable[tuple[int, int]], steps: int, delta: float
) -> float:
    """The smallest noise multiplier (to 0.1 %) whose :func:`epsilon` is at most ``target``."""
    pairs = list(batches)
    low, high = 0.0, 1.0
    while epsilon(noise_multiplier=high, batches=pairs, steps=steps, delta=delta) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise ConfigError(
                f"distill.dp_target_epsilon={target} needs a noise multiplier above 1e4 at "
                f"{steps} steps; raise the target or lower distill.iterations"
            )
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        if epsilon(noise_multiplier=mid, batches=pairs, steps=steps, delta=delta) > target:
            low = mid
        else:
            high = mid
    return high


def privacy_budget(
    settings: DistillSection, counts: np.ndarray, *, steps: int
) -> dict[str, float]:
    """The DP noise multiplier (given, or found for ``dp_target_epsilon``) and the ε it gives
    over the run, from the census: every (images held, images taken per step) pair of every
    client and class (see the module doc); empty when DP is off. Client sampling is ignored (it
    would only lower ε)."""
    if settings.dp_clip <= 0:
        return {}
    take = batch_shares(counts, batch_real=settings.batch_real, mode=settings.batch_mode)
    pairs = [(int(n), int(t)) for n, t in zip(counts.ravel(), take.ravel(), strict=True) if t]
    sigma = settings.dp_noise_multiplier or noise_for_epsilon(
        float(settings.dp_target_epsilon or 0), batches=pairs, steps=steps, delta=settings.dp_delta
    )
    eps = epsilon(noise_multiplier=sigma, batches=pairs, steps=steps, delta=settings.dp_delta)
    return {
        "dp_clip": settings.dp_clip,
        "dp_noise_multiplier": sigma,
        "dp_epsilon": eps,
        "dp_delta": settings.dp_delta,
    }


__all__ = [
    "epsilon",
    "noise_for_epsilon",
    "per_example_gradients",
    "privacy_budget",
    "private_mean",
]
