"""Server-side DistDD pieces: settings checks, batch shares, aggregation, initialisation, the
match step and the network updates between matching steps.

Each function is pure (tensors and arrays in, tensors out) so the loop in :mod:`.loop` reads as
the algorithm and the tests can check every piece against an independent reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distdd_nas.config import DistillSection
from distdd_nas.distill.codec import GRAD_DTYPES, DecodeError, RowCodec
from distdd_nas.distill.matching import get_distance
from distdd_nas.errors import ConfigError
from distdd_nas.federation.aggregators import (
    CLASS_GRADIENT_GUARD,
    AggregatorSpec,
    drop_non_finite,
    make_aggregator,
)
from distdd_nas.federation.message import Message

log = logging.getLogger(__name__)

#: (outer_loop, inner_loop) by images per class, from Dataset Condensation (Zhao et al., 2021).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}

Distance = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]


def dc_loops(ipc: int) -> tuple[int, int]:
    """DC's (outer_loop, inner_loop) for ``ipc``: the table's entry where it has one; between
    two entries the outer loop is ``ipc`` (it equals ipc throughout DC's table) and the inner
    loop is linearly interpolated between the neighbours (rounded half up), e.g. ipc 5 →
    (5, 23); above the table, its last entry (50, 10).

    Earlier versions took the nearest lower entry, so ipc 2-9 got (1, 1): one matching step
    per iteration and a network that was never updated.
    """
    ipc = max(int(ipc), 1)
    if ipc in DC_LOOPS:
        return DC_LOOPS[ipc]
    keys = sorted(DC_LOOPS)
    if ipc > keys[-1]:
        return DC_LOOPS[keys[-1]]
    low = max(k for k in keys if k < ipc)
    high = min(k for k in keys if k > ipc)
    (_, inner_low), (_, inner_high) = DC_LOOPS[low], DC_LOOPS[high]
    inner = inner_low + (inner_high - inner_low) * (ipc - low) / (high - low)
    return ipc, int(np.floor(inner + 0.5))


def resolve_loops(settings: DistillSection) -> tuple[int, int]:
    """(outer_loop, inner_loop): the settings where given, else DC's table for ``ipc``."""
    outer, inner = dc_loops(settings.ipc)
    return (
        settings.outer_loop or outer,
        inner if settings.inner_loop is None else settings.inner_loop,
    )


def check_settings(settings: DistillSection) -> None:
    """Reject settings the loop cannot run, with the key to fix (the pydantic section already
    checks types and ranges; this also covers sections built without validation)."""
    choices: dict[str, Collection[str]] = {
        "batch_mode": BATCH_MODES,
        "net_update": NET_UPDATES,
        "init": INITS,
        "grad_dtype": GRAD_DTYPES,
    }
    for key, allowed in choices.items():
        value = getattr(settings, key)
        if value not in allowed:
            raise ConfigError(
                f"distill.{key}={value!r} is unknown; use one of {', '.join(allowed)}"
            )
    get_distance(settings.distance)
    make_aggregator(settings.aggregator)
    RowCodec((), settings.grad_dtype, settings.grad_topk)  # ConfigError: out of range
    if settings.dp_clip > 0 and settings.init == "client_mean":
        raise ConfigError(
            "distill.init=client_mean sends per-class pixel sums outside the privacy budget; "
            'use distill.init = "noise" with distill.dp_clip'
        )
    if settings.dp_clip > 0 and not (settings.dp_noise_multiplier or settings.dp_target_epsilon):
        raise ConfigError(
            "distill.dp_clip without noise gives no privacy (ε = ∞); set "
            "distill.dp_noise_multiplier or distill.dp_target_epsilon"
        )
    if settings.dp_clip == 0 and (settings.dp_noise_multiplier or settings.dp_target_epsilon):
        raise ConfigError(
            "distill.dp_noise_multiplier / dp_target_epsilon need distill.dp_clip > 0 "
            "(the per-example clipping norm)"
        )
    for key in ("ipc", "iterations", "batch_real", "batch_syn"):
        if int(getattr(settings, key)) < 1:
            raise ConfigError(f"distill.{key}={getattr(settings, key)} must be >= 1")
    if settings.outer_loop is not None and settings.outer_loop < 1:
        raise ConfigError(
            f"distill.outer_loop={settings.outer_loop} must be >= 1 (or unset for DC's table)"
        )
    if settings.inner_loop is not None and settings.inner_loop < 0:
        raise ConfigError(
            f"distill.inner_loop={settings.inner_loop} must be >= 0 (or unset for DC's table)"
        )


def check_class_totals(totals: np.ndarray, *, ipc: int) -> None:
    """``ipc`` must not exceed the images the clients hold together of any class they hold:
    a synthetic set larger than the real one is not a distillation. Classes nobody holds are
    only logged (their synthetic images keep their initial values)."""
    held = totals[totals > 0]
    if len(held) == 0:
        raise ConfigError("no client holds any training example; check the partition")
    if ipc > int(held.min()):
        c = int(np.flatnonzero(totals == held.min())[0])
        raise ConfigError(
            f"distill.ipc={ipc} exceeds the {int(held.min())} images of class {c} "
            f"held by all clients together; use distill.ipc <= {int(held.min())}"
        )
    missing = np.flatnonzero(totals == 0)
    if len(missing):
        log.warning(
            "no client holds classes %s; their synthetic images stay at init", missing.tolist()
        )


def batch_shares(counts: np.ndarray, *, batch_real: int, mode: str) -> np.ndarray:
    """Images of each class each selected client should draw (selected clients × classes).

    ``proportional``: ``batch_real`` is the global per-class batch, split over the selected
    clients in proportion to how many images of the class they hold (rounded half up, at least
    1 where they hold any, at most what they hold), so the total client work per step equals
    centralized DC's and the count-weighted mean is the gradient over the union of the drawn
    batches. When a class has ≤ ``batch_real`` images in total every client uses all of them.
    ``per_client``: every client draws up to ``batch_real`` of each class it holds.
    """
    shares = BATCH_MODES.get(mode)
    if shares is None:
        raise ConfigError(f"unknown batch_mode {mode!r}; use one of {', '.join(BATCH_MODES)}")
    return shares(np.asarray(counts, dtype=np.int64), batch_real)


def _proportional_shares(counts: np.ndarray, batch_real: int) -> np.ndarray:
    totals = counts.sum(axis=0, keepdims=True)
    share = counts * (batch_real / np.maximum(totals, 1))
    take = np.maximum(np.floor(share + 0.5).astype(np.int64), (counts > 0).astype(np.int64))
    return np.minimum(take, counts)


def _per_client_shares(counts: np.ndarray, batch_real: int) -> np.ndarray:
    return np.minimum(counts, batch_real)


#: Batch modes by name (``distill.batch_mode``): shares(counts, batch_real) (see batch_shares).
BATCH_MODES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "proportional": _proportional_shares,
    "per_client": _per_client_shares,
}


def aggregate_class_gradients(
    replies: Mapping[int, Message],
    *,
    dim: int,
    aggregator: AggregatorSpec = "mean",
    asked: Mapping[int, np.ndarray] | None = None,
    codec: RowCodec | None = None,
) -> tuple[dict[int, torch.Tensor], list[int]]:
    """Per-class aggregate G_c over the clients that sent class c, weighted by images used.

    Replies holding NaN/Inf, whose ``grads`` do not have one row of ``dim`` values per
    positive count, or (given ``asked``, the per-class counts the server requested) that send a
    class they were not asked for, are dropped whole (their ids are the second value);
    ``codec`` decodes the rows (None: dense float ``grads``, as :class:`RowCodec` sends them). A
    client's weight is the count it reports, capped at the count it was asked for: a client
    claiming more images than it was sent for cannot outweigh the others. Classes no client
    sent are absent from the result (skipped this step).
    """
    finite, rejected = drop_non_finite(
        {c: r.arrays for c, r in replies.items()}, what="class gradients"
    )
    combine = make_aggregator(aggregator, guard=CLASS_GRADIENT_GUARD)
    per_class: dict[int, tuple[list[dict[str, np.ndarray]], list[float]]] = {}
    for cid, arrays in finite.items():
        counts = np.asarray(arrays["counts"])
        if asked is not None:
            wanted = np.asarray(asked[cid])
            if counts.shape != wanted.shape or ((counts > 0) & (wanted == 0)).any():
                log.warning("rejected class gradients of client %d: classes not asked for", cid)
                rejected.append(cid)
                continue
            counts = np.minimum(counts, wanted)
        sent = np.flatnonzero(counts > 0)
        try:  # float16 and integer uploads are decoded to float32 here
            grads = (codec or RowCodec(((dim,),))).decode(arrays, len(sent))
        except DecodeError as err:
            log.warning("rejected class gradients of client %d: %s", cid, err)
            rejected.append(cid)
            continue
        for row, c in enumerate(sent):
            items, weights = per_class.setdefault(int(c), ([], []))
            items.append({"g": grads[row]})
            weights.append(float(counts[c]))
    out = {
        c: torch.from_numpy(np.asarray(combine(items, w)["g"], dtype=np.float32))
        for c, (items, w) in sorted(per_class.items())
    }
    return out, sorted(rejected)


def split_like(flat: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Cut a flat gradient back into per-parameter shapes (views, no copy)."""
    out, start = [], 0
    for p in params:
        out.append(flat[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out


def init_noise(
    *, ipc: int, num_classes: int, shape: tuple[int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise images N(0, 1) in normalised space (the server has no real data)."""
    return torch.randn((num_classes * ipc, *shape), generator=generator)


def init_client_mean(
    *,
    ipc: int,
    stats: Sequence[Mapping[str, np.ndarray]],
    shape: tuple[int, int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Images drawn around the per-class, per-pixel mean/std aggregated (count-weighted) from
    the clients' ``class_stats`` replies (``moment_counts`` images each, where sent); classes
    with no moments from any client fall back to N(0, 1)."""
    counts = np.sum(
        [np.asarray(s.get("moment_counts", s["counts"]), dtype=np.float64) for s in stats], axis=0
    )
    total = np.sum([np.asarray(s["sum"], dtype=np.float64) for s in stats], axis=0)
    total_sq = np.sum([np.asarray(s["sumsq"], dtype=np.float64) for s in stats], axis=0)
    num_classes = len(counts)
    mean = np.zeros_like(total)
    std = np.ones_like(total)
    held = counts > 0
    mean[held] = total[held] / counts[held, None]
    var = total_sq[held] / counts[held, None] - mean[held] ** 2
    std[held] = np.sqrt(np.clip(var, 1e-8, None))
    noise = torch.randn(
        (num_classes, ipc, int(np.prod(shape))), generator=generator, dtype=torch.float64
    )
    images = torch.from_numpy(mean)[:, None] + torch.from_numpy(std)[:, None] * noise
    return images.reshape(num_classes * ipc, *shape).float()


def _noise_images(
    *,
    ipc: int,
    num_classes: int,
    stats: Sequence[Mapping[str, np.ndarray]],
    shape: tuple[int, int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    return init_noise(ipc=ipc, num_classes=num_classes, shape=shape, generator=generator)


def _client_mean_images(
    *,
    ipc: int,
    num_classes: int,
    stats: Sequence[Mapping[str, np.ndarray]],
    shape: tuple[int, int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    return init_client_mean(ipc=ipc, stats=stats, shape=shape, generator=generator)


#: Initial synthetic images by name (``distill.init``), called with the keyword arguments
#: ``ipc``, ``num_classes``, ``stats`` (the clients' ``class_stats`` replies; only
#: ``client_mean`` reads them), ``shape`` and ``generator``.
INITS: dict[str, Callable[..., torch.Tensor]] = {
    "noise": _noise_images,
    "client_mean": _client_mean_images,
}


def match_loss(
    net: nn.Module,
    images: torch.Tensor,
    *,
    ipc: int,
    targets: Mapping[int, torch.Tensor],
    distance: Distance,
) -> torch.Tensor:
    """L(S) = Σ_c D(∇θ CE(f_θ(S_c), c), G_c) over the classes with a target this step.

    Synthetic images of class c are rows c·ipc … (c+1)·ipc − 1 (one forward per class, as in
    DC, so BatchNorm sees per-class statistics like the clients' per-class batches). Builds the
    graph for a second-order backward into ``images``.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    loss = images.new_zeros(())
    for c, target in targets.items():
        x = images[c * ipc : (c + 1) * ipc]
        y = torch.full((ipc,), c, dtype=torch.long)
        g_syn = torch.autograd.grad(F.cross_entropy(net(x), y), params, create_graph=True)
        loss = loss + distance(g_syn, split_like(target, params))
    return loss


#: ``(params, x, y) → ∇ mean CE``: the inner loop's gradients from a compiled function instead
#: of eager autograd (:func:`~distdd_nas.distill.compiled.make_grad_fn`).
GradFn = Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor], Sequence[torch.Tensor]]


def train_net_on_synthetic(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    grad_fn: GradFn | None = None,
) -> None:
    """DC's inner loop: ``steps`` epochs of SGD on the (detached) synthetic set, shuffled.

    ``grad_fn`` (from :func:`~distdd_nas.distill.compiled.make_grad_fn`) computes the batch
    gradients instead of eager autograd; the optimizer step is the same.
    """
    x, y = images.detach(), labels
    n = len(y)
    params = [p for p in net.parameters() if p.requires_grad]
    for _ in range(steps):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            if grad_fn is None:
                F.cross_entropy(net(x[idx]), y[idx]).backward()
            else:
                for p, g in zip(params, grad_fn(params, x[idx], y[idx]), strict=True):
                    p.grad = g
            optimizer.step()


@torch.no_grad()
def step_with_global_gradient(
    net: nn.Module, targets: Mapping[int, torch.Tensor], *, lr: float
) -> None:
    """FedSGD-like update θ ← θ − lr · mean_c G_c (no communication beyond the match step)."""
    params = [p for p in net.parameters() if p.requires_grad]
    mean = torch.stack(list(targets.values())).mean(dim=0)
    for p, g in zip(params, split_like(mean, params), strict=True):
        p.sub_(lr * g)


def _update_on_synthetic(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: Mapping[int, torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    grad_fn: GradFn | None,
) -> None:
    train_net_on_synthetic(
        net,
        optimizer,
        images,
        labels,
        steps=steps,
        batch_size=batch_size,
        generator=generator,
        grad_fn=grad_fn,
    )


def _update_with_global_gradient(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: Mapping[int, torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    grad_fn: GradFn | None,
) -> None:
    if targets:
        step_with_global_gradient(net, targets, lr=lr)


#: Network updates between matching steps by name (``distill.net_update``), called with
#: ``(net, optimizer)`` and the keyword arguments ``images``, ``labels``, ``targets`` (this
#: step's aggregated class gradients), ``steps``, ``batch_size``, ``lr``, ``generator`` and
#: ``grad_fn``; ``synthetic`` is DC's inner loop, ``global_grad`` a step along the mean target.
NET_UPDATES: dict[str, Callable[..., None]] = {
    "synthetic": _update_on_synthetic,
    "global_grad": _update_with_global_gradient,
}
