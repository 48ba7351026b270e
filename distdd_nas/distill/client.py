"""Client-side DistDD tasks: ``class_stats`` and ``class_gradients``.

Clients only do first-order work: for each class they hold, the gradient of the mean
cross-entropy of the server's model on a mini-batch of that class. Raw images never leave a
client; only gradients, counts and (for the optional ``client_mean`` initialisation) per-class
pixel sums do.

Wire format of ``class_gradients`` (every array is metered by the engine):

* down: the model state (``get_parameters`` format) plus ``take`` — int64, one entry per class:
  how many images of that class to draw (0 = do not send that class). The server computes it
  from the ``class_stats`` census (see :func:`distdd_nas.distill.server.batch_shares`).
* up: ``counts`` — int64, one entry per class: images actually used (0 = class not sent) — and
  ``grads`` — float32, one row per class with a positive count (ascending class order), the
  gradients of all trainable parameters flattened and concatenated in ``model.parameters()``
  order.

Speed (see :func:`per_class_gradients`): when no layer mixes samples, class batches are cut into
cache-sized micro-batches, and optionally all classes of a micro-batch share one forward and one
backward pass, the per-class weight gradients being formed from the layer inputs and output
gradients. Both give the same numbers as one forward/backward per class, to float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distdd_nas.errors import ConfigError
from distdd_nas.federation.engine import ClientData, ClientTask
from distdd_nas.federation.message import Message
from distdd_nas.fl.tasks import model_from_message
from distdd_nas.seeding import numpy_rng

#: Rows per forward/backward when samples are independent: keeps activations in cache (the
#: conv-1 output of 64 Fashion-MNIST images at width 32 is 8 MB; 256 images overflow a 32 MB L3).
MICRO_BATCH = 64

GradientPath = Literal["fused", "micro", "plain"]
GRADIENT_PATHS: tuple[GradientPath, ...] = ("fused", "micro", "plain")


@dataclass(frozen=True)
class Segment:
    """Rows ``start:stop`` of a class-sorted batch all belong to class ``label``."""

    label: int
    start: int
    stop: int


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def class_stats(client: ClientData, msg: Message) -> Message:
    """Per-class example counts of the client's training split.

    With ``msg.config["moments"]`` true the reply also carries per-class pixel sums ``sum`` and
    sums of squares ``sumsq`` (float64, classes × C·H·W), from which the server forms
    count-weighted class means and standard deviations for the ``client_mean`` initialisation.
    """
    labels = client.train_labels()
    num_classes = client.dataset.num_classes
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    arrays: dict[str, np.ndarray] = {"counts": counts}
    if bool(msg.config.get("moments", False)):
        dim = int(np.prod(client.dataset.input_shape))
        sums = np.zeros((num_classes, dim), dtype=np.float64)
        sumsq = np.zeros((num_classes, dim), dtype=np.float64)
        for c in np.flatnonzero(counts):
            idx = torch.as_tensor(client.train_indices[labels == c])
            flat = client.dataset.images[idx].reshape(len(idx), -1).double()
            sums[c] = flat.sum(dim=0).numpy()
            sumsq[c] = flat.pow(2).sum(dim=0).numpy()
        arrays["sum"] = sums
        arrays["sumsq"] = sumsq
    return Message(arrays=arrays)


def class_gradients(client: ClientData, msg: Message) -> Message:
    """∇θ CE(f_θ(x_c), c) for every class c the server asks for and the client holds.

    ``msg.arrays["take"][c]`` images of class c are drawn without replacement (capped at what
    the client holds; all of them when the cap binds) from a stream seeded by
    ``msg.config["seed"]``, the client id and the class, so a step is reproducible. See the
    module docstring for the reply layout.
    """
    return _class_gradients(client, msg, path="fused")


def class_gradients_with(*, path: GradientPath) -> ClientTask:
    """``class_gradients`` on a chosen :func:`per_class_gradients` path (for benchmarks; all
    paths agree to float rounding)."""
    return functools.partial(_class_gradients, path=path)


def _class_gradients(client: ClientData, msg: Message, *, path: GradientPath) -> Message:
    take = np.asarray(msg.arrays["take"], dtype=np.int64)
    num_classes = client.dataset.num_classes
    if take.shape != (num_classes,):
        raise ConfigError(
            f"class_gradients: 'take' must hold one count per class "
            f"({num_classes}), got shape {take.shape}; send batch_shares() rows"
        )
    model = model_from_message(client, msg, extra=("take",))
    model.train()
    chosen, segments = draw_class_batches(client, take=take, seed=int(msg.config["seed"]))
    counts = np.zeros(num_classes, dtype=np.int64)
    for seg in segments:
        counts[seg.label] = seg.stop - seg.start
    if not segments:
        dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return Message(arrays={"counts": counts, "grads": np.zeros((0, dim), dtype=np.float32)})
    images = client.dataset.images[torch.as_tensor(chosen)]
    grads = per_class_gradients(model, images, segments, path=path)
    return Message(arrays={"counts": counts, "grads": grads.numpy()})


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def draw_class_batches(
    client: ClientData, *, take: np.ndarray, seed: int
) -> tuple[np.ndarray, list[Segment]]:
    """Indices of a class-sorted batch (``take[c]`` of class c, capped) and its segments."""
    labels = client.train_labels()
    parts: list[np.ndarray] = []
    segments: list[Segment] = []
    start = 0
    for c in np.flatnonzero(take > 0):
        held = client.train_indices[labels == c]
        if len(held) == 0:
            continue
        n = int(min(take[c], len(held)))
        if n < len(held):
            rng = numpy_rng(seed, "class_batch", client.cid, int(c))
            held = np.sort(rng.choice(held, size=n, replace=False))
        parts.append(held)
        segments.append(Segment(int(c), start, start + n))
        start += n
    chosen = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return chosen, segments


# --------------------------------------------------------------------------------------------
# Per-class gradients
# --------------------------------------------------------------------------------------------


def per_class_gradients(
    model: nn.Module,
    images: torch.Tensor,
    segments: Sequence[Segment],
    *,
    path: GradientPath = "fused",
) -> torch.Tensor:
    """Rows of ∇θ mean CE(f_θ(x_s), s.label) for each segment s of a class-sorted batch.

    Returns a float32 tensor (len(segments) × trainable parameter count), parameters flattened
    in ``model.parameters()`` order. The model's mode is respected (call ``model.train()`` for
    DC semantics).

    Paths: ``plain`` is one forward/backward per class, exactly as DC computes real-data
    gradients. When samples do not interact (:func:`is_sample_independent`), ``micro`` cuts
    each class batch into micro-batches of at most :data:`MICRO_BATCH` rows whose gradients are
    summed — the same numbers up to float rounding, but activations stay in cache (on a 2-core
    EPYC a class batch of 256 Fashion-MNIST images runs ~1.6× faster as 4 × 64) — and
    ``fused`` (default) also lets the classes inside a micro-batch share one forward and one
    backward pass (:func:`_fused_rows`). Models whose samples interact (BatchNorm in training
    mode: batch statistics) always take ``plain``.
    """
    if path not in GRADIENT_PATHS:
        raise ConfigError(
            f"unknown gradient path {path!r}; use one of {', '.join(GRADIENT_PATHS)}"
        )
    if path == "plain" or not is_sample_independent(model):
        return _class_loop(model, images, segments, micro_batch=None)
    if path == "micro":
        return _class_loop(model, images, segments, micro_batch=MICRO_BATCH)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = torch.zeros(len(segments), dim)
    for lo in range(0, segments[-1].stop if segments else 0, MICRO_BATCH):
        hi = min(lo + MICRO_BATCH, segments[-1].stop)
        parts = [
            (row, s, max(s.start, lo), min(s.stop, hi))
            for row, s in enumerate(segments)
            if s.start < hi and s.stop > lo
        ]
        _fused_rows(model, images, parts, out)
    return out


def is_sample_independent(model: nn.Module) -> bool:
    """True when no layer mixes samples, so per-sample loss gradients can be summed freely.

    Also requires what the fused path relies on: parameters only in leaf modules and not
    shared, and no module working in place (an in-place activation would overwrite the layer
    outputs whose gradients the fused path reads).
    """
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            return False
        if getattr(module, "inplace", False):
            return False
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and any(True for _ in module.children()):
            return False
        for p in own:
            if id(p) in seen:
                return False
            seen.add(id(p))
    return True


def _class_loop(
    model: nn.Module, images: torch.Tensor, segments: Sequence[Segment], *, micro_batch: int | None
) -> torch.Tensor:
    """One forward/backward per class (split into micro-batches whose gradients are summed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for seg in segments:
        n = seg.stop - seg.start
        step = n if micro_batch is None else micro_batch
        total: list[torch.Tensor] | None = None
        for lo in range(seg.start, seg.stop, step):
            x = images[lo : min(lo + step, seg.stop)]
            y = torch.full((len(x),), seg.label, dtype=torch.long)
            loss = F.cross_entropy(model(x), y, reduction="sum") / n
            grads = torch.autograd.grad(loss, params)
            total = list(grads) if total is None else [a + g for a, g in zip(total, grads)]
        assert total is not None
        rows.append(torch.cat([g.reshape(-1) for g in total]))
    return torch.stack(rows)


@dataclass
class _Call:
    """One call of a parameterised leaf module during the fused forward pass."""

    module: nn.Module
    inp: torch.Tensor
    out: torch.Tensor


def _fused_rows(
    model: nn.Module,
    images: torch.Tensor,
    parts: Sequence[tuple[int, Segment, int, int]],
    out: torch.Tensor,
) -> None:
    """Add to ``out[row]`` the gradient contributions of rows ``lo:hi`` of each class segment.

    One forward over the micro-batch, the loss Σ_i CE_i / n_class(i), one backward to every
    parameterised layer's output, then per-class weight gradients from (layer input, output
    gradient) restricted to the class's rows. Because samples do not interact, a row's output
    gradient only depends on its own class's loss, so the per-class weight gradients are exact.
    """
    owners = _parameter_owners(model)
    calls: list[_Call] = []
    handles = [
        module.register_forward_hook(
            lambda m, args, output: calls.append(_Call(m, args[0].detach(), output))
        )
        for module in {id(m): m for m, _ in owners}.values()
    ]
    lo = parts[0][2]
    try:
        logits = model(images[lo : parts[-1][3]])
    finally:
        for h in handles:
            h.remove()
    labels = torch.cat([torch.full((b - a,), s.label, dtype=torch.long) for _, s, a, b in parts])
    weights = torch.cat([torch.full((b - a,), 1.0 / (s.stop - s.start)) for _, s, a, b in parts])
    total = (F.cross_entropy(logits, labels, reduction="none") * weights).sum()
    deltas = torch.autograd.grad(total, [c.out for c in calls], allow_unused=True)
    slot, start = {}, 0
    for _, p in owners:
        slot[id(p)] = (start, start + p.numel())
        start += p.numel()
    with torch.no_grad():
        for call, delta in zip(calls, deltas, strict=True):
            if delta is None:  # a layer output that does not reach the loss: zero gradient
                continue
            for row, _, a, b in parts:
                rows = slice(a - lo, b - lo)
                for p, g in _layer_gradients(call.module, call.inp[rows], delta[rows]):
                    first, last = slot[id(p)]
                    out[row, first:last] += g.reshape(-1)


def _parameter_owners(model: nn.Module) -> list[tuple[nn.Module, torch.Tensor]]:
    """(leaf module, parameter) for every trainable parameter, in ``model.parameters()`` order."""
    owners = [
        (m, p) for m in model.modules() for p in m.parameters(recurse=False) if p.requires_grad
    ]
    order = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
    return sorted(owners, key=lambda mp: order[id(mp[1])])


def _layer_gradients(
    module: nn.Module, inp: torch.Tensor, delta: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Gradients of ``module``'s own parameters for input rows ``inp`` and output grads
    ``delta``: closed forms for Conv2d and Linear, autograd on a re-run forward otherwise."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        bias = module.bias
        _, gw, gb = torch.ops.aten.convolution_backward(
            delta,
            inp,
            module.weight,
            None if bias is None else [bias.shape[0]],
            module.stride,
            module.padding,
            module.dilation,
            False,
            [0, 0],
            module.groups,
            [False, True, bias is not None],
        )
        pairs = [(module.weight, gw)]
        return pairs + ([(bias, gb)] if bias is not None else [])
    if isinstance(module, nn.Linear):
        x2 = inp.reshape(-1, inp.shape[-1])
        d2 = delta.reshape(-1, delta.shape[-1])
        pairs = [(module.weight, d2.t() @ x2)]
        return pairs + ([(module.bias, d2.sum(dim=0))] if module.bias is not None else [])
    params = [p for p in module.parameters(recurse=False) if p.requires_grad]
    with torch.enable_grad():
        grads = torch.autograd.grad(module(inp), params, delta)
    return list(zip(params, grads, strict=True))
