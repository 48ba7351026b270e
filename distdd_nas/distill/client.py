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

Speed: when every layer treats samples independently (no BatchNorm in training mode), all classes
share one forward pass and one backward pass to the layer outputs; only the cheap per-layer weight
gradients are then formed class by class (:func:`per_class_gradients`). This gives the same
numbers as one forward/backward per class, with fewer and larger kernel calls.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distdd_nas.errors import ConfigError
from distdd_nas.federation.engine import ClientData, ClientTask
from distdd_nas.federation.message import Message
from distdd_nas.fl.tasks import model_from_message
from distdd_nas.seeding import numpy_rng

#: Largest batch one fused forward pass takes; larger requests are split by class into chunks
#: so activation memory stays bounded (ConvNet-128 on 32×32 needs ~1.5 MB per image).
MAX_FUSED_BATCH = 1024


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
    return _class_gradients(client, msg, fused=True)


def class_gradients_with(*, fused: bool) -> ClientTask:
    """``class_gradients`` forced onto the fused or the per-class reference path (benchmarks;
    the two agree to float rounding)."""
    return functools.partial(_class_gradients, fused=fused)


def _class_gradients(client: ClientData, msg: Message, *, fused: bool) -> Message:
    take = np.asarray(msg.arrays["take"], dtype=np.int64)
    num_classes = client.dataset.num_classes
    if take.shape != (num_classes,):
        raise ConfigError(f"class_gradients: 'take' must hold one count per class "
                          f"({num_classes}), got shape {take.shape}; send batch_shares() rows")
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
    grads = per_class_gradients(model, images, segments, fused=fused)
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
    model: nn.Module, images: torch.Tensor, segments: Sequence[Segment], *, fused: bool = True
) -> torch.Tensor:
    """Rows of ∇θ mean CE(f_θ(x_s), s.label) for each segment s of a class-sorted batch.

    Returns a float32 tensor (len(segments) × trainable parameter count), parameters flattened
    in ``model.parameters()`` order. Uses the fused path when ``fused`` and the model allows it
    (see :func:`can_fuse`), else one forward/backward per segment — the two agree to float
    rounding.
    The model's mode is respected (call ``model.train()`` for DC semantics).
    """
    if not (fused and can_fuse(model)):
        return _loop_gradients(model, images, segments)
    rows = []
    for chunk in _chunks(segments, MAX_FUSED_BATCH):
        lo, hi = chunk[0].start, chunk[-1].stop
        shifted = [Segment(s.label, s.start - lo, s.stop - lo) for s in chunk]
        rows.append(_fused_gradients(model, images[lo:hi], shifted))
    return torch.cat(rows) if len(rows) > 1 else rows[0]


def can_fuse(model: nn.Module) -> bool:
    """True when one shared forward/backward gives exact per-class gradients.

    Requires that samples do not interact (no BatchNorm in training mode), that parameters live
    only in leaf modules and are not shared, and that no module works in place (an in-place
    activation would overwrite the layer outputs whose gradients the fused path reads).
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


def _chunks(segments: Sequence[Segment], limit: int) -> list[list[Segment]]:
    """Consecutive groups of whole segments with at most ``limit`` rows (or one segment)."""
    groups: list[list[Segment]] = []
    current: list[Segment] = []
    rows = 0
    for seg in segments:
        size = seg.stop - seg.start
        if current and rows + size > limit:
            groups.append(current)
            current, rows = [], 0
        current.append(seg)
        rows += size
    if current:
        groups.append(current)
    return groups


def _loop_gradients(
    model: nn.Module, images: torch.Tensor, segments: Sequence[Segment]
) -> torch.Tensor:
    """Reference path: one forward/backward per class (what DC does for real data)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for seg in segments:
        x = images[seg.start : seg.stop]
        y = torch.full((len(x),), seg.label, dtype=torch.long)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@dataclass
class _Call:
    """One call of a parameterised leaf module during the fused forward pass."""

    module: nn.Module
    inp: torch.Tensor
    out: torch.Tensor


def _fused_gradients(
    model: nn.Module, images: torch.Tensor, segments: Sequence[Segment]
) -> torch.Tensor:
    """Fused path: Σ_c mean-CE_c, one backward to every parameterised layer's output, then
    per-class weight gradients from (layer input, output gradient) restricted to the class rows.

    Because samples do not interact, the output gradient of a class-c row only depends on L_c,
    so the per-class weight gradients are exactly ∇θ L_c.
    """
    owners = _parameter_owners(model)
    calls: list[_Call] = []
    handles = [
        module.register_forward_hook(
            lambda m, args, out: calls.append(_Call(m, args[0].detach(), out))
        )
        for module in {id(m): m for m, _ in owners}.values()
    ]
    try:
        labels = torch.cat([torch.full((s.stop - s.start,), s.label, dtype=torch.long)
                            for s in segments])
        weights = torch.cat([torch.full((s.stop - s.start,), 1.0 / (s.stop - s.start))
                             for s in segments])
        logits = model(images)
    finally:
        for h in handles:
            h.remove()
    total = (F.cross_entropy(logits, labels, reduction="none") * weights).sum()
    deltas = torch.autograd.grad(total, [c.out for c in calls], allow_unused=True)
    sizes = [p.numel() for _, p in owners]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = torch.zeros(len(segments), int(offsets[-1]))
    slot = {id(p): (int(offsets[i]), int(offsets[i + 1])) for i, (_, p) in enumerate(owners)}
    with torch.no_grad():
        for call, delta in zip(calls, deltas, strict=True):
            if delta is None:  # a layer output that does not reach the loss: zero gradient
                continue
            for row, seg in enumerate(segments):
                part = slice(seg.start, seg.stop)
                for p, g in _layer_gradients(call.module, call.inp[part], delta[part]):
                    lo, hi = slot[id(p)]
                    out[row, lo:hi] += g.reshape(-1)
    return out


def _parameter_owners(model: nn.Module) -> list[tuple[nn.Module, torch.Tensor]]:
    """(leaf module, parameter) for every trainable parameter, in ``model.parameters()`` order."""
    owners = [(m, p) for m in model.modules() for p in m.parameters(recurse=False)
              if p.requires_grad]
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
            delta, inp, module.weight, None if bias is None else [bias.shape[0]],
            module.stride, module.padding, module.dilation, False, [0, 0], module.groups,
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
