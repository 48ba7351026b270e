"""Client-side DistDD tasks: ``class_stats`` and ``class_gradients``.

Clients only do first-order work: for each class they hold, the gradient of the mean
cross-entropy of the server's model on a mini-batch of that class. Raw images never leave a
client; only gradients, counts and (for the optional ``client_mean`` initialisation) per-class
pixel sums do. Under differential privacy (``dp_noise`` / ``dp_clip`` in the message) the
counts are noised and the class gradients clipped per example and noised
(:mod:`distdd_nas.distill.privacy`).

Wire format of ``class_gradients`` (every array is metered by the engine):

* down: the model state (``get_parameters`` format) plus ``take`` — int64, one entry per class:
  how many images of that class to draw (0 = do not send that class). The server computes it
  from the ``class_stats`` census (see :func:`distdd_nas.distill.server.batch_shares`).
* up: ``counts`` — int64, one entry per class: images actually used (0 = class not sent) — and
  ``grads`` — one row per class with a positive count (ascending class order), the
  gradients of all trainable parameters flattened and concatenated in ``model.parameters()``
  order; float32, or float16 when ``msg.config["grad_dtype"] == "float16"`` (half the upload;
  the server aggregates in float32). Integer types and top-k (``grad_topk``) replace
  ``grads`` by the arrays of :mod:`distdd_nas.distill.codec`. Under DP, ``counts`` is
  ``take`` and every asked class has a row.

Speed (see :func:`per_class_gradients`): when no layer mixes samples, class batches are cut into
cache-sized micro-batches whose gradients are summed — the same numbers as one forward/backward
per class, to float rounding, ~1.4-1.8× faster for 256-image class batches on a 2-core EPYC
(:data:`MICRO_BATCH`). Batching a client's classes together was implemented and measured too,
on a quickstart-like client (7 classes of 1-15 images, ConvNet-32, 1 thread): one forward and
one backward with per-class weight gradients formed from layer inputs and output gradients
took 37 ms against the loop's 24 ms; ``is_grads_batched`` over per-class losses 123 ms and
``torch.func.vmap`` over padded classes 114 ms (each class's backward then runs over the whole
batch). The loop stays.
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

from distdd_nas.distill.codec import RowCodec
from distdd_nas.distill.feedback import encode_rows
from distdd_nas.distill.privacy import noised_counts, per_example_gradients, private_mean
from distdd_nas.errors import ConfigError
from distdd_nas.federation.engine import ClientData, ClientTask
from distdd_nas.federation.message import Message
from distdd_nas.federation.model_wire import model_from_message
from distdd_nas.seeding import derive_seed, numpy_rng, torch_generator

#: Largest micro-batch (rows) when samples are independent. For ConvNet-32 on Fashion-MNIST
#: (1 thread, 2-core EPYC, busy neighbours), forward/backward of a 256-image class batch took
#: 1.08 ms/image in one batch, 0.75 in micro-batches of 64, 0.59 of 32, 0.61 of 16 (glibc's
#: default allocator policy, ``nn.AvgPool2d``); with :mod:`distdd_nas.allocator`'s policy and
#: AvgPool2x2, 0.64 in one batch (its 33 MB block-1 activation is still mapped and unmapped
#: each time) and 0.46 in micro-batches of 64 or of 32.
MICRO_BATCH = 32

GradientPath = Literal["micro", "plain"]
GRADIENT_PATHS: tuple[GradientPath, ...] = ("micro", "plain")


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
    count-weighted class means and standard deviations for the ``client_mean`` initialisation,
    and ``moment_counts``, the images behind each row. Only classes the client holds at least
    ``msg.config["min_count"]`` images of are summed (the others are zero rows with count 0):
    the sum over one image *is* that image. With ``msg.config["dp_noise"]`` > 0 the counts
    carry Gaussian noise of that std (float64, seeded by ``msg.config["seed"]`` and the
    client id), never the exact counts.
    """
    labels = client.train_labels()
    num_classes = client.dataset.num_classes
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    arrays: dict[str, np.ndarray] = {"counts": counts}
    noise = float(msg.config.get("dp_noise", 0.0))
    if noise > 0:
        rng = numpy_rng(int(msg.config["seed"]), "census_noise", client.cid)
        arrays["counts"] = noised_counts(counts, std=noise, rng=rng)
    if bool(msg.config.get("moments", False)):
        dim = int(np.prod(client.dataset.input_shape))
        sums = np.zeros((num_classes, dim), dtype=np.float64)
        sumsq = np.zeros((num_classes, dim), dtype=np.float64)
        summed = np.where(counts >= int(msg.config.get("min_count", 1)), counts, 0)
        for c in np.flatnonzero(summed):
            idx = torch.as_tensor(client.train_indices[labels == c])
            flat = client.dataset.images[idx].reshape(len(idx), -1).double()
            sums[c] = flat.sum(dim=0).numpy()
            sumsq[c] = flat.pow(2).sum(dim=0).numpy()
        arrays["sum"] = sums
        arrays["sumsq"] = sumsq
        arrays["moment_counts"] = summed
    return Message(arrays=arrays)


def class_gradients(client: ClientData, msg: Message) -> Message:
    """∇θ CE(f_θ(x_c), c) for every class c the server asks for and the client holds.

    ``msg.arrays["take"][c]`` images of class c are drawn without replacement (capped at what
    the client holds; all of them when the cap binds) from a stream seeded by
    ``msg.config["seed"]``, the client id and the class, so a step is reproducible. See the
    module docstring for the reply layout.
    """
    return _class_gradients(client, msg, path="micro")


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
    codec = RowCodec.of(model, msg.config)  # ConfigError: unknown grad_dtype
    model.train()
    chosen, segments = draw_class_batches(client, take=take, seed=int(msg.config["seed"]))
    images = client.dataset.images[torch.as_tensor(chosen)]
    clip = float(msg.config.get("dp_clip", 0.0))
    if clip > 0:  # a row for every asked class, each divided by its take, which it reports
        grads = private_class_gradients(
            model,
            images,
            segments,
            take=take,
            clip=clip,
            noise_multiplier=float(msg.config["dp_noise"]),
            seed=derive_seed(int(msg.config["seed"]), "dp", client.cid),
        )
        asked = np.flatnonzero(take > 0).tolist()
        sent = encode_rows(client, msg, grads.numpy(), asked, codec)
        return Message(arrays={"counts": take, **sent})
    counts = np.zeros(num_classes, dtype=np.int64)
    for seg in segments:
        counts[seg.label] = seg.stop - seg.start
    if not segments:
        dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return Message(arrays={"counts": counts, **codec.encode(np.zeros((0, dim)), rngs=[])})
    rows = per_class_gradients(model, images, segments, path=path).numpy()
    sent = encode_rows(client, msg, rows, [seg.label for seg in segments], codec)
    return Message(arrays={"counts": counts, **sent})


def private_class_gradients(
    model: nn.Module,
    images: torch.Tensor,
    segments: Sequence[Segment],
    *,
    take: np.ndarray,
    clip: float,
    noise_multiplier: float,
    seed: int,
) -> torch.Tensor:
    """One row per class with ``take`` > 0 (ascending), each the differentially private sum
    of the class's per-example gradients (clipped at ``clip``, Gaussian noise of std
    ``noise_multiplier × clip``) divided by its ``take``: a class the client holds fewer or no
    images of still gets its row (noise only when none), so the reply does not reveal how many
    images it holds (:mod:`distdd_nas.distill.privacy`)."""
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    by_label = {seg.label: seg for seg in segments}
    rows = []
    for c in np.flatnonzero(take > 0):
        seg = by_label.get(int(c))
        per = (
            per_example_gradients(model, images[seg.start : seg.stop], seg.label)
            if seg is not None
            else torch.zeros(0, dim)
        )
        gen = torch_generator(seed, int(c))
        rows.append(
            private_mean(
                per, clip=clip, noise_multiplier=noise_multiplier, generator=gen, size=int(take[c])
            )
        )
    return torch.stack(rows)


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
    path: GradientPath = "micro",
) -> torch.Tensor:
    """Rows of ∇θ mean CE(f_θ(x_s), s.label) for each segment s of a class-sorted batch.

    Returns a float32 tensor (len(segments) × trainable parameter count), parameters flattened
    in ``model.parameters()`` order. The model's mode is respected (call ``model.train()`` for
    DC semantics).

    Paths: ``plain`` is one forward/backward per class, exactly as DC computes real-data
    gradients. ``micro`` (default) cuts each class batch into micro-batches of at most
    :data:`MICRO_BATCH` rows whose summed-loss gradients are added — the same numbers up to
    float rounding, but activations stay in cache. Models whose samples interact (BatchNorm in
    training mode: batch statistics) always take ``plain``.
    """
    if path not in GRADIENT_PATHS:
        raise ConfigError(
            f"unknown gradient path {path!r}; use one of {', '.join(GRADIENT_PATHS)}"
        )
    micro = path == "micro" and is_sample_independent(model)
    return _class_loop(model, images, segments, micro_batch=MICRO_BATCH if micro else None)


def is_sample_independent(model: nn.Module) -> bool:
    """True when no layer mixes samples (no BatchNorm in training mode), so per-sample loss
    gradients can be summed over any split of the batch."""
    return not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()
    )


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
