"""Differential privacy for everything a client sends a distillation (DP-SGD style), and its ε.

**Neighbouring relation**: replace-one — one training example (image *and* label) of one
client replaced by any other; the accountant is Google's ``dp-accounting`` RDP accountant with
``NeighboringRelation.REPLACE_ONE``. What a client sends under ``distill.dp_clip`` = C > 0:

* **Census** (round 0, once): its per-class counts plus N(0, s²) on each. A replacement that
  changes the label moves one count down and another up by 1: L2 sensitivity √2, so the
  release is ``GaussianDpEvent(s/√2)``. We set s = σ/√2 (:func:`census_noise_std`), i.e.
  noise multiplier σ/2, the same as one class upload below. No pixel moments are sent
  (``client_mean`` is refused with DP); the server rounds the noised counts and clips them at 0
  (post-processing) and uses them for batch shares and weights.
* **Class gradients** (every step): for every class c the server asks for (``take`` > 0, from
  the noised census: a class the client does not hold is asked for too when its noised count
  is positive), the client draws ``take`` of its ``n`` images without replacement (all of them
  when ``take`` ≥ n, none when it holds none), computes every per-example gradient, clips each
  to L2 norm ≤ C, sums, adds N(0, σ²C²I) and divides by ``take`` (public); it reports
  ``take`` as its count and sends a row for every asked class, so neither the reply's counts
  nor its rows reveal n. Replacing an example of the same class moves the clipped sum by ≤ 2C
  (noise multiplier σ/2) with probability take/n: ``SampledWithoutReplacementDpEvent``.
  A replacement that changes the label removes one example from class c and adds one to c':
  each class's upload is then a sampled mechanism of the same kind (a uniform ``take``-subset
  of n − 1 images is the ``take``-subset of n with x swapped for another image), so a step is
  bounded by the composition of the uploads of the client's **two** classes with the largest
  sampling rates (:func:`client_event`).

The whole run composes the census with ``steps`` such steps (``ComposedDpEvent``); a client's ε
is that event's at δ, the run's the worst over clients. The server sees only noised counts, so
it accounts every client as :data:`UNKNOWN_COUNTS` (sampling rate 1 for two classes: no
amplification, an upper bound for any counts); :func:`epsilon` with a client's true (n, take)
pairs gives the tighter ε that client could account for itself. Client sampling
(``distill.fraction``, else ``federation.fraction``, < 1) would only lower ε and is ignored.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from distdd_nas.config import DistillSection
from distdd_nas.errors import ConfigError, MissingDependencyError

#: (images held, images taken per step) pairs the server accounts every client as: it knows
#: only noised counts, so it assumes each step uses a whole class (rate 1) for two classes.
UNKNOWN_COUNTS: tuple[tuple[int, int], ...] = ((1, 1), (1, 1))


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
    rows: torch.Tensor,
    *,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
    size: int | None = None,
) -> torch.Tensor:
    """(Σ_i clip_C(g_i) + N(0, σ²C²)) / size for the n rows g_i (``size`` defaults to n; the
    client passes the public ``take``, so the divisor reveals nothing; zero rows give noise)."""
    norms = rows.norm(dim=1, keepdim=True)
    clipped = rows * torch.clamp(clip / norms.clamp_min(1e-12), max=1.0)
    noise = torch.randn(rows.shape[1], generator=generator, dtype=rows.dtype)
    return (clipped.sum(dim=0) + noise_multiplier * clip * noise) / (size or len(rows))


def census_noise_std(noise_multiplier: float) -> float:
    """Std of the Gaussian noise on each census count: σ/√2, i.e. noise multiplier σ/2 at the
    census's L2 sensitivity √2 (see the module doc)."""
    return noise_multiplier / math.sqrt(2)


def noised_counts(counts: np.ndarray, *, std: float, rng: np.random.Generator) -> np.ndarray:
    """What a client's census reply carries under DP: its counts plus N(0, std²) each."""
    return np.asarray(counts, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(counts))


@functools.cache
def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise MissingDependencyError(
            "differential privacy needs the dp-accounting package; pip install dp-accounting"
        ) from err
    return dp_accounting


def client_event(
    *, noise_multiplier: float, batches: Iterable[tuple[int, int]], steps: int, census: bool
) -> Any:
    """The ``dp_accounting`` event of one client's run: (with ``census``) the census's Gaussian,
    composed with ``steps`` steps, each the composition of the uploads of the two classes with
    the largest sampling rates among ``batches`` = (n images held, take per step) pairs (rate
    1 — the plain Gaussian — where take ≥ n)."""
    dpa = _dp_accounting()
    gaussian = dpa.GaussianDpEvent(noise_multiplier / 2)  # replace-one sensitivity 2C
    pairs = sorted(
        ((min(take / n, 1.0) if n > 0 else 1.0, n, take) for n, take in batches if take > 0),
        reverse=True,
    )[:2]
    uploads = [
        gaussian if rate >= 1 else dpa.SampledWithoutReplacementDpEvent(n, take, gaussian)
        for rate, n, take in pairs
    ]
    events = [dpa.SelfComposedDpEvent(dpa.ComposedDpEvent(uploads), steps)] if uploads else []
    if census:
        events.insert(0, dpa.GaussianDpEvent(noise_multiplier / 2))  # sensitivity √2, std σ/√2
    return dpa.ComposedDpEvent(events)


def epsilon(
    *,
    noise_multiplier: float,
    clients: Iterable[Sequence[tuple[int, int]]],
    steps: int,
    delta: float,
    census: bool,
) -> float:
    """ε at ``delta``, the worst over ``clients`` (each its (n, take) pairs, one per class) of
    :func:`client_event`; ∞ without noise."""
    if noise_multiplier <= 0:
        return math.inf
    dpa = _dp_accounting()
    worst = 0.0
    for batches in {tuple(sorted(b)) for b in clients}:
        accountant = dpa.rdp.RdpAccountant(
            neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE
        )
        event = client_event(
            noise_multiplier=noise_multiplier, batches=batches, steps=steps, census=census
        )
        accountant.compose(event)
        worst = max(worst, float(accountant.get_epsilon(delta)))
    return worst


def noise_for_epsilon(
    target: float,
    *,
    clients: Iterable[Sequence[tuple[int, int]]],
    steps: int,
    delta: float,
    census: bool,
) -> float:
    """The smallest noise multiplier (to 0.1 %) whose :func:`epsilon` — the same composed
    event, census included when ``census`` — is at most ``target``."""
    groups = [tuple(b) for b in clients]

    def eps(sigma: float) -> float:
        return epsilon(
            noise_multiplier=sigma, clients=groups, steps=steps, delta=delta, census=census
        )

    low, high = 0.0, 1.0
    while eps(high) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise ConfigError(
                f"distill.dp_target_epsilon={target} needs a noise multiplier above 1e4 at "
                f"{steps} steps; raise the target or lower distill.iterations"
            )
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        if eps(mid) > target:
            low = mid
        else:
            high = mid
    return high


def privacy_budget(settings: DistillSection, *, steps: int) -> dict[str, float]:
    """The DP noise multiplier σ (given, or found for ``dp_target_epsilon``), the census's
    count noise std and the ε of the whole run (census + ``steps`` steps, every client
    accounted as :data:`UNKNOWN_COUNTS`: the server only ever sees noised counts); empty when
    DP is off. Known before the census, which it noises."""
    if settings.dp_clip <= 0:
        return {}
    clients, delta = [UNKNOWN_COUNTS], settings.dp_delta
    sigma = settings.dp_noise_multiplier or noise_for_epsilon(
        float(settings.dp_target_epsilon or 0), clients=clients, steps=steps, delta=delta,
        census=True,
    )  # fmt: skip
    eps = epsilon(noise_multiplier=sigma, clients=clients, steps=steps, delta=delta, census=True)
    return {
        "dp_clip": settings.dp_clip,
        "dp_noise_multiplier": sigma,
        "dp_census_noise": census_noise_std(sigma),
        "dp_epsilon": eps,
        "dp_delta": delta,
    }


__all__ = [
    "UNKNOWN_COUNTS",
    "census_noise_std",
    "client_event",
    "epsilon",
    "noise_for_epsilon",
    "noised_counts",
    "per_example_gradients",
    "privacy_budget",
    "private_mean",
]
