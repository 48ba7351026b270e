"""The DistDD server loop, written once against the Engine protocol.

Round 0 asks every client for its class counts (noised under DP; and pixel moments for the
``client_mean`` initialisation). Then K outer iterations, each with a freshly seeded network θ0 and
``outer_loop`` matching steps. A matching step is one engine round, numbered by a global step
counter (1, 2, …) so the ledger has one round per step: configure (select clients, tell each
how many images of each class to draw), fit (clients return class gradients), aggregate
(per-class example-weighted mean, or a robust aggregator, after dropping non-finite replies),
match (one SGD step on the synthetic images). Between steps the network is updated on the server:
DC's inner loop on the synthetic set (``net_update = "synthetic"``), or a step along the mean
aggregated class gradient (``"global_grad"``). As in DC, the last step of an iteration is not
followed by a network update. With ``seed_broadcast`` an iteration's first step sends the
network's seed, not its weights (clients rebuild it bit-identically); later steps must send
weights: the network has moved along aggregates the clients never see.

Client sampling (``fraction``) is an argument rather than read from the settings: a study takes
``distill.fraction`` where set, else ``federation.fraction``, the share FedAvg samples
(:attr:`distdd_nas.study.Study.distill_fraction`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from distdd_nas.allocator import tune_malloc
from distdd_nas.config import DistillSection
from distdd_nas.data import ImageDataset
from distdd_nas.distill.census import ClassCensus, census
from distdd_nas.distill.checkpoint import Checkpointer, DistillState
from distdd_nas.distill.codec import RowCodec, wire_config
from distdd_nas.distill.compiled import compiles, make_grad_fn
from distdd_nas.distill.evaluate import evaluate_synthetic
from distdd_nas.distill.matching import get_distance
from distdd_nas.distill.privacy import privacy_budget
from distdd_nas.distill.result import DistilledSet, DistillResult
from distdd_nas.distill.server import (
    INITS,
    NET_UPDATES,
    Distance,
    GradFn,
    aggregate_class_gradients,
    batch_shares,
    check_class_totals,
    check_settings,
    match_loss,
    resolve_loops,
)
from distdd_nas.federation import Engine, Message, select_clients
from distdd_nas.federation.message import Scalar
from distdd_nas.federation.quorum import DEFAULT_QUORUM, Quorum, deliver
from distdd_nas.models import ArchSpec, build_model, get_parameters
from distdd_nas.seeding import derive_seed, torch_generator

log = logging.getLogger(__name__)


@dataclass
class _Timer:
    """Seconds spent per phase within one outer iteration."""

    client_s: float = 0.0
    match_s: float = 0.0
    update_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    rejected: int = 0
    retried: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _Run:
    """Everything fixed for a whole run (to keep function signatures short)."""

    engine: Engine
    arch: ArchSpec
    arch_json: str
    input_shape: tuple[int, int, int]
    num_classes: int
    settings: DistillSection
    census: ClassCensus
    distance: Distance
    ipc: int
    dim: int
    seed: int
    fraction: float
    grad_fn: GradFn | None
    quorum: Quorum
    privacy: dict[str, float]


def run_distill(
    engine: Engine,
    *,
    arch: ArchSpec,
    input_shape: tuple[int, int, int],
    num_classes: int,
    settings: DistillSection,
    seed: int,
    fraction: float = 1.0,
    compile: bool | None = None,
    test: ImageDataset | None = None,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
    quorum: Quorum = DEFAULT_QUORUM,
    checkpoint: Checkpointer | None = None,
) -> DistillResult:
    """Distil a synthetic set of ``settings.ipc`` images per class from the engine's clients.

    Args:
        engine: Carries and meters every payload; clients run ``class_stats``/``class_gradients``.
        arch: The distillation network (sent to clients as JSON, weights as arrays).
        input_shape, num_classes: (C, H, W) of the images; classes (``ipc`` images each).
        settings: The ``[distill]`` section.
        seed: Root seed: initial images, every θ0, client batches and client selection.
        fraction: Clients selected per step.
        compile: The inner loop through torch.compile (None: as ``settings.compile`` resolves,
            :func:`~distdd_nas.distill.compiled.compiles`).
        test: Server test set for accuracy checkpoints every ``settings.eval_every``.
        on_iteration: Called with each history row (progress bars).
        quorum: Replies a step needs before it is re-sent or skipped (images unchanged).
        checkpoint: Stores the state after every outer iteration; a run resumes from it to
            the bytes of an uninterrupted run (the caller clears it once the result is kept).

    Returns:
        The synthetic set, one history row per iteration (:func:`_history_row`), the census
        class counts and the wall time (accuracy checkpoints excluded).

    Raises:
        ConfigError: Unknown distance/aggregator/mode, or ``ipc`` above a class's total count.
        EngineError: The census is empty or inconsistent.
    """
    check_settings(settings)
    tune_malloc()  # no page faults on every step's activations (distdd_nas.allocator)
    outer, inner = resolve_loops(settings)
    compile = compiles(settings) if compile is None else compile
    privacy = privacy_budget(settings, steps=settings.iterations * outer)  # before the census
    state, start = _begin(
        engine, settings, checkpoint, num_classes=num_classes, shape=input_shape, seed=seed,
        census_noise=privacy.get("dp_census_noise", 0.0),
    )  # fmt: skip
    images = state.images.clone().requires_grad_(True)
    labels = torch.arange(num_classes).repeat_interleave(settings.ipc)
    opt_img = torch.optim.SGD([images], lr=settings.lr_img, momentum=settings.momentum_img)
    if state.optimizer:
        opt_img.load_state_dict(state.optimizer)
    run = _start(
        engine, arch, settings, ClassCensus(state.counts, state.moments), privacy=privacy,
        input_shape=input_shape, num_classes=num_classes, seed=seed, fraction=fraction,
        compile=compile, quorum=quorum,
    )  # fmt: skip
    rows = list(state.rows)
    eval_s = 0.0
    for it in range(state.iterations_done, settings.iterations):
        timer = _iteration(run, images, labels, opt_img, it=it, outer=outer, inner=inner)
        row = _history_row(it, outer, timer, engine, wall_s=time.perf_counter() - start - eval_s)
        if test is not None and _checkpoint_due(settings, it):
            t0 = time.perf_counter()
            row.update(_checkpoint(images, labels, run=run, test=test))
            eval_s += time.perf_counter() - t0
        rows.append(row)
        if checkpoint is not None:
            elapsed = time.perf_counter() - start - eval_s
            checkpoint.save(_after(state, it, images, opt_img, rows, engine, elapsed=elapsed))
        log.info("distill iteration %d: %s", it + 1, row)
        if on_iteration is not None:
            on_iteration(row)
    history = pd.DataFrame(rows).astype({"iteration": int, "steps": int, "rejected": int})
    synthetic = DistilledSet(images.detach().clone(), labels, num_classes)
    wall = time.perf_counter() - start - eval_s
    return DistillResult(synthetic, history, state.counts, wall, privacy=run.privacy)


def _after(
    state: DistillState,
    it: int,
    images: torch.Tensor,
    opt_img: torch.optim.Optimizer,
    rows: list[dict[str, float]],
    engine: Engine,
    *,
    elapsed: float,
) -> DistillState:
    """The state once iteration ``it`` is done (what the checkpoint stores)."""
    return replace(
        state,
        iterations_done=it + 1,
        images=images.detach(),
        optimizer=opt_img.state_dict(),
        rows=rows,
        ledger=engine.ledger,
        elapsed_s=elapsed,
    )


def _begin(
    engine: Engine,
    settings: DistillSection,
    checkpoint: Checkpointer | None,
    *,
    num_classes: int,
    shape: tuple[int, int, int],
    seed: int,
    census_noise: float,
) -> tuple[DistillState, float]:
    """(the checkpoint's state, its ledger replayed into ``engine``'s; or a fresh one after
    the census round — counts noised with std ``census_noise`` under DP —: initial images, no
    iterations done) and the run's start on the ``perf_counter`` clock, moved back by the
    seconds the saved state had already spent."""
    began = time.perf_counter()
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        log.info("resuming the distillation after iteration %d", saved.iterations_done)
        engine.ledger.extend(saved.ledger)
        return saved, began - saved.elapsed_s
    info = census(
        engine,
        num_classes=num_classes,
        moments=settings.init == "client_mean",
        min_count=settings.init_min_count,
        dp_noise=census_noise,
        seed=derive_seed(seed, "distill", "census"),
    )
    check_class_totals(info.counts.sum(axis=0), ipc=settings.ipc)
    images = _initial_images(settings, info, num_classes=num_classes, shape=shape, seed=seed)
    fresh = DistillState(
        iterations_done=0,
        images=images.detach(),
        optimizer={},
        rows=[],
        ledger=engine.ledger,
        counts=info.counts,
        moments=info.moments,
        elapsed_s=0.0,
    )
    return fresh, began


def _start(
    engine: Engine,
    arch: ArchSpec,
    settings: DistillSection,
    info: ClassCensus,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    seed: int,
    fraction: float,
    compile: bool,
    quorum: Quorum,
    privacy: dict[str, float],
) -> _Run:
    """What every matching step of a run shares (the probe network only gives shapes)."""
    probe = build_model(arch, input_shape=input_shape, num_classes=num_classes, seed=0)
    return _Run(
        engine,
        arch,
        json.dumps(arch.to_dict(), sort_keys=True),
        input_shape,
        num_classes,
        settings,
        info,
        get_distance(settings.distance),
        settings.ipc,
        sum(p.numel() for p in probe.parameters() if p.requires_grad),
        seed,
        fraction,
        make_grad_fn(probe, compiled=compile),
        quorum,
        privacy,
    )


def _checkpoint(
    images: torch.Tensor, labels: torch.Tensor, *, run: _Run, test: ImageDataset
) -> dict[str, float]:
    """DC's evaluation of the images so far (``distill.eval``): mean and std accuracy."""
    acc, std, _ = evaluate_synthetic(
        images.detach(),
        labels,
        arch=run.arch,
        test=test,
        settings=run.settings.eval,
        seed=derive_seed(run.seed, "distill", "checkpoint"),
    )
    return {"acc_mean": acc, "acc_std": std}


def _checkpoint_due(settings: DistillSection, it: int) -> bool:
    """Accuracy checkpoints every ``eval_every`` iterations and after the last one."""
    done = it + 1
    return bool(settings.eval_every) and (
        done % settings.eval_every == 0 or done == settings.iterations
    )


def _initial_images(
    settings: DistillSection,
    info: ClassCensus,
    *,
    num_classes: int,
    shape: tuple[int, int, int],
    seed: int,
) -> torch.Tensor:
    """The synthetic images at the start (``settings.init``), ready to be optimised."""
    gen = torch_generator(seed, "distill", "init")
    images = INITS[settings.init](
        ipc=settings.ipc, num_classes=num_classes, stats=info.moments, shape=shape, generator=gen
    )
    return images.requires_grad_(True)


def _iteration(
    run: _Run,
    images: torch.Tensor,
    labels: torch.Tensor,
    opt_img: torch.optim.Optimizer,
    *,
    it: int,
    outer: int,
    inner: int,
) -> _Timer:
    """One outer iteration on a freshly seeded network θ0: ``outer`` matching steps with
    network updates in between."""
    settings = run.settings
    net_seed = derive_seed(run.seed, "distill", "net", it)
    net = build_model(
        run.arch, input_shape=run.input_shape, num_classes=run.num_classes, seed=net_seed
    )
    net.train()
    opt_net = torch.optim.SGD(net.parameters(), lr=settings.lr_net)
    inner_gen = torch_generator(run.seed, "distill", "inner", it)
    timer = _Timer()
    for ol in range(outer):
        step = it * outer + ol + 1
        targets = _matching_step(
            run, net, images, opt_img, step=step, timer=timer, net_seed=net_seed, fresh=ol == 0
        )
        if ol == outer - 1:
            break
        t0 = time.perf_counter()
        NET_UPDATES[settings.net_update](
            net,
            opt_net,
            images=images,
            labels=labels,
            targets=targets,
            steps=inner,
            batch_size=settings.batch_syn,
            lr=settings.lr_net,
            generator=inner_gen,
            grad_fn=run.grad_fn,
        )
        timer.update_s += time.perf_counter() - t0
    return timer


def _matching_step(
    run: _Run,
    net: nn.Module,
    images: torch.Tensor,
    opt_img: torch.optim.Optimizer,
    *,
    step: int,
    timer: _Timer,
    net_seed: int,
    fresh: bool,
) -> dict[int, torch.Tensor]:
    """One engine round and one SGD step on the images; returns the aggregated targets.
    ``net`` was built from ``net_seed`` and, when ``fresh``, not updated since."""
    settings = run.settings
    t0 = time.perf_counter()
    selected = select_clients(
        num_clients=run.engine.num_clients, fraction=run.fraction, seed=run.seed, round=step
    )
    take = batch_shares(
        run.census.counts[selected], batch_real=settings.batch_real, mode=settings.batch_mode
    )
    params = {} if fresh and settings.seed_broadcast else get_parameters(net)
    config: dict[str, Scalar] = {
        "arch": run.arch_json,
        "seed": derive_seed(run.seed, "distill", "step", step),
        "grad_dtype": settings.grad_dtype,
        **wire_config(settings, step=step, net_seed=net_seed, fresh=fresh),
    }
    if run.privacy:
        config["dp_clip"] = run.privacy["dp_clip"]
        config["dp_noise"] = run.privacy["dp_noise_multiplier"]
    asked = {cid: take[i] for i, cid in enumerate(selected) if take[i].any()}
    messages = {
        cid: Message(arrays={**params, "take": counts}, config=config)
        for cid, counts in asked.items()
    }
    delivery = deliver(run.engine, "class_gradients", messages, round=step, quorum=run.quorum)
    timer.retried += delivery.attempts - 1
    timer.skipped += delivery.skipped
    replies = {} if delivery.skipped else delivery.replies
    targets, rejected = aggregate_class_gradients(
        replies, dim=run.dim, aggregator=settings.aggregator, asked=asked,
        codec=RowCodec.of(net, config),
    )  # fmt: skip
    timer.rejected += len(rejected)
    t1 = time.perf_counter()
    timer.client_s += t1 - t0
    if not targets:
        log.warning("step %d: no class gradients arrived; synthetic set unchanged", step)
        return targets
    loss = match_loss(net, images, ipc=run.ipc, targets=targets, distance=run.distance)
    opt_img.zero_grad(set_to_none=True)
    loss.backward(inputs=[images])  # only ∇_S: θ's gradients are not needed here
    opt_img.step()
    timer.losses.append(float(loss.detach()) / len(targets))
    timer.match_s += time.perf_counter() - t1
    return targets


def _history_row(
    it: int, outer: int, timer: _Timer, engine: Engine, *, wall_s: float
) -> dict[str, float]:
    """One history row: ``iteration``, ``steps``, ``match_loss`` (mean per class and step),
    ``rejected`` replies, ``retried`` / ``skipped`` steps (short of the quorum), cumulative
    ``bytes_up``/``bytes_down`` and ``wall_s``, and seconds in ``client_s`` / ``match_s`` /
    ``update_s``."""
    return {
        "iteration": float(it),
        "steps": float((it + 1) * outer),
        "match_loss": float(np.mean(timer.losses)) if timer.losses else float("nan"),
        "rejected": float(timer.rejected),
        "retried": float(timer.retried),
        "skipped": float(timer.skipped),
        "bytes_up": float(engine.ledger.bytes_up),
        "bytes_down": float(engine.ledger.bytes_down),
        "wall_s": wall_s,
        "client_s": timer.client_s,
        "match_s": timer.match_s,
        "update_s": timer.update_s,
    }
