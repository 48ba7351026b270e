"""Seconds per DistDD matching step, inner loop and full DC iteration, and FLOP/s efficiency.

A matching step is split into *client* time (the engine round: every selected client computes
its per-class gradients, plus server-side aggregation) and *match* time (the server's
second-order step on the synthetic images). The inner loop is DC's network update on the
synthetic set. A full DC iteration is outer_loop × step + (outer_loop − 1) × inner loop; it is
both estimated from the parts and measured with ``run_distill`` (one iteration), and compared to
DC's official code on this machine class (distdd-notes.md: 37 s at ipc 10, 1.3 s at ipc 1, with
ConvNet width 32, batch_real 256, 2 threads).

Efficiency: the FLOPs the clients execute in a step (counted by torch's FlopCounterMode) per
second of client time, against the FLOP/s of a plain forward+backward of the same network on a
large batch (the best this machine does for these convolutions with torch).

    python bench/distill_step.py                          # Fashion-MNIST, 10 clients, ipc 10
    python bench/distill_step.py --dataset digits --width 16 --steps 3
    python bench/distill_step.py --client-path loop       # the per-class reference path
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from distdd_nas.config import DistillSection
from distdd_nas.data import ImageDataset, load_dataset, make_partitioner
from distdd_nas.distill import resolve_loops, run_distill
from distdd_nas.distill.client import GRADIENT_PATHS, GradientPath, class_gradients_with
from distdd_nas.distill.compiled import make_grad_fn
from distdd_nas.distill.matching import get_distance
from distdd_nas.distill.server import (
    aggregate_class_gradients,
    batch_shares,
    init_noise,
    match_loss,
    train_net_on_synthetic,
)
from distdd_nas.federation import ClientData, InProcessEngine, Message
from distdd_nas.models import ArchSpec, build_model, count_parameters, get_parameters
from distdd_nas.seeding import derive_seed, torch_generator
from distdd_nas.study import default_tasks

DC_SECONDS_PER_ITERATION = {10: 37.0, 1: 1.3}  # DC's official code, width 32, batch_real 256


@dataclass(frozen=True)
class Setup:
    """Everything one benchmark configuration needs."""

    train: ImageDataset
    clients: list[ClientData]
    arch: ArchSpec
    settings: DistillSection
    counts: np.ndarray  # clients × classes


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["fashion_mnist", "digits"], default="fashion_mnist")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--partition", choices=["iid", "dirichlet"], default="iid")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--batch-mode", choices=["proportional", "per_client"], default="proportional")
    p.add_argument("--outer", type=int, default=None, help="outer_loop (default: DC's table)")
    p.add_argument("--inner", type=int, default=None, help="inner_loop (default: DC's table)")
    p.add_argument("--steps", type=int, default=5, help="repeats of a matching step")
    p.add_argument("--inner-repeats", type=int, default=3, help="repeats of an inner loop")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--client-path",
        choices=[*GRADIENT_PATHS, "all"],
        default="all",
        help="client gradient path(s) to time (see per_class_gradients)",
    )
    p.add_argument(
        "--no-dc-style",
        action="store_true",
        help="skip the in-situ DC-style reference (one client holding all data, "
        "one forward/backward of batch_real images per class)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the torch.compile'd inner loop and use it for the DistDD paths",
    )
    p.add_argument(
        "--no-iteration",
        action="store_true",
        help="skip measuring one full iteration with run_distill",
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p.parse_args()


def build_setup(args: argparse.Namespace) -> Setup:
    train = load_dataset(args.dataset, seed=0).train
    labels = train.labels.numpy()
    split = make_partitioner(
        args.partition, num_clients=args.clients, alpha=args.alpha, min_size=1
    ).split(labels, seed=0, num_classes=train.num_classes)
    clients = [
        ClientData(
            cid=i, dataset=train, train_indices=idx, holdout_indices=np.zeros(0, dtype=np.int64)
        )
        for i, idx in enumerate(split.client_indices)
    ]
    counts = np.stack(
        [np.bincount(labels[c.train_indices], minlength=train.num_classes) for c in clients]
    ).astype(np.int64)
    settings = DistillSection(
        ipc=args.ipc,
        iterations=1,
        outer_loop=args.outer,
        inner_loop=args.inner,
        batch_real=args.batch_real,
        batch_mode=args.batch_mode,
    )
    return Setup(train, clients, ArchSpec(depth=args.depth, width=args.width), settings, counts)


def engine_for(setup: Setup, path: GradientPath, *, centralized: bool = False) -> InProcessEngine:
    """The benchmark's engine: the setup's clients, or one client holding all their data."""
    tasks = {**default_tasks(), "class_gradients": class_gradients_with(path=path)}
    clients = setup.clients
    if centralized:
        pool = np.sort(np.concatenate([c.train_indices for c in clients]))
        clients = [
            ClientData(
                cid=0,
                dataset=setup.train,
                train_indices=pool,
                holdout_indices=np.zeros(0, dtype=np.int64),
            )
        ]
    return InProcessEngine(clients=clients, tasks=tasks)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def time_steps(setup: Setup, engine: InProcessEngine, repeats: int) -> dict[str, float]:
    """Median client and match seconds of a matching step, and client FLOPs per step."""
    train, s = setup.train, setup.settings
    shape, classes = train.input_shape, train.num_classes
    distance = get_distance(s.distance)
    images = init_noise(
        ipc=s.ipc, num_classes=classes, shape=shape, generator=torch_generator(0, "bench")
    ).requires_grad_(True)
    counts = setup.counts if engine.num_clients > 1 else setup.counts.sum(0, keepdims=True)
    take = batch_shares(counts, batch_real=s.batch_real, mode=s.batch_mode)
    arch_json = json.dumps(setup.arch.to_dict())
    client_s, match_s, flops = [], [], 0.0
    for r in range(repeats + 1):  # the first repeat warms up and counts FLOPs
        net = build_model(setup.arch, input_shape=shape, num_classes=classes, seed=r)
        params = get_parameters(net)
        msgs = {
            cid: Message(
                arrays={**params, "take": take[cid]},
                config={"arch": arch_json, "seed": derive_seed(0, "bench", r)},
            )
            for cid in range(engine.num_clients)
        }
        dim = count_parameters(net)
        t0 = time.perf_counter()
        if r == 0:
            with FlopCounterMode(display=False) as counter:
                replies = engine.run_round("class_gradients", msgs, round=r)
            flops = float(counter.get_total_flops())
        else:
            replies = engine.run_round("class_gradients", msgs, round=r)
        targets, _ = aggregate_class_gradients(replies, dim=dim)
        t1 = time.perf_counter()
        loss = match_loss(net, images, ipc=s.ipc, targets=targets, distance=distance)
        loss.backward(inputs=[images])
        t2 = time.perf_counter()
        if r > 0:
            client_s.append(t1 - t0)
            match_s.append(t2 - t1)
    return {
        "client_s": median(client_s),
        "match_s": median(match_s),
        "client_s_min": min(client_s),
        "client_flops": flops,
    }


def time_inner_loop(
    setup: Setup, inner: int, repeats: int, *, compiled: bool = False
) -> tuple[float, float]:
    """Median seconds of one inner loop (``inner`` epochs of SGD on S), and the seconds of the
    first (warm-up) loop, which includes the compilation when ``compiled``."""
    train, s = setup.train, setup.settings
    template = build_model(setup.arch, input_shape=train.input_shape, num_classes=10, seed=0)
    grad_fn = make_grad_fn(template, compiled=compiled)
    images = init_noise(
        ipc=s.ipc,
        num_classes=train.num_classes,
        shape=train.input_shape,
        generator=torch_generator(0, "bench"),
    )
    labels = torch.arange(train.num_classes).repeat_interleave(s.ipc)
    times = []
    for r in range(repeats + 1):
        net = build_model(
            setup.arch, input_shape=train.input_shape, num_classes=train.num_classes, seed=r
        )
        opt = torch.optim.SGD(net.parameters(), lr=s.lr_net)
        t0 = time.perf_counter()
        train_net_on_synthetic(
            net,
            opt,
            images,
            labels,
            steps=inner,
            batch_size=s.batch_syn,
            generator=torch_generator(0, "bench", r),
            grad_fn=grad_fn,
        )
        times.append(time.perf_counter() - t0)
    return median(times[1:]), times[0]


def peak_flops(setup: Setup, repeats: int = 3) -> tuple[float, int]:
    """Best FLOP/s of a plain eager forward+backward of the network over batch sizes (on a
    CPU mid-sized batches win: large ones overflow the cache), and the best batch size."""
    train = setup.train
    net = build_model(
        setup.arch, input_shape=train.input_shape, num_classes=train.num_classes, seed=0
    )
    best = (0.0, 0)
    for batch in (32, 64, 128, 256, 1024):
        x = torch.randn(batch, *train.input_shape)
        y = torch.randint(0, train.num_classes, (batch,))

        def step(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))

        with FlopCounterMode(display=False) as counter:
            step()
        rate = float(counter.get_total_flops()) / median([timed(step) for _ in range(repeats)])
        best = max(best, (rate, batch))
    return best


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measured_iteration(setup: Setup, engine: InProcessEngine, *, compiled: bool) -> float:
    """Seconds of the last real run_distill iteration (census and start-up excluded); two
    iterations when ``compiled``, so that the compilation is not counted."""
    train = setup.train
    result = run_distill(
        engine,
        arch=setup.arch,
        input_shape=train.input_shape,
        num_classes=train.num_classes,
        settings=setup.settings.model_copy(update={"iterations": 2 if compiled else 1}),
        seed=0,
        compile=compiled,
    )
    row = result.history.iloc[-1]
    return float(row["client_s"] + row["match_s"] + row["update_s"])


def report(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    outer, inner = resolve_loops(setup.settings)
    out: dict[str, Any] = {"config": vars(args), "outer_loop": outer, "inner_loop": inner}
    out["peak_flops"], out["peak_batch"] = peak_flops(setup)
    eager_inner, _ = time_inner_loop(setup, inner, args.inner_repeats)
    out["inner_loop_s"] = eager_inner
    if args.compile:
        out["inner_loop_compiled_s"], out["first_compiled_loop_s"] = time_inner_loop(
            setup, inner, args.inner_repeats, compiled=True
        )
    runs: list[tuple[str, GradientPath, bool]] = [
        (p, p, False)
        for p in (GRADIENT_PATHS if args.client_path == "all" else [args.client_path])
    ]
    if not args.no_dc_style:
        runs.append(("dc-style", "plain", True))
    for name, path, centralized in runs:
        compiled = args.compile and not centralized  # DC has no compiled inner loop
        inner_s = out["inner_loop_compiled_s"] if compiled else eager_inner
        engine = engine_for(setup, path, centralized=centralized)
        step = time_steps(setup, engine, args.steps)
        est = outer * (step["client_s"] + step["match_s"]) + (outer - 1) * inner_s
        step.update(
            estimated_iteration_s=est,
            efficiency=step["client_flops"] / step["client_s"] / out["peak_flops"],
        )
        if not args.no_iteration:
            step["measured_iteration_s"] = measured_iteration(
                setup, engine_for(setup, path, centralized=centralized), compiled=compiled
            )
        out[name] = step
    return out


def iteration_seconds(r: dict[str, float]) -> float:
    """Measured seconds per iteration where measured, else the estimate from the parts."""
    return float(r.get("measured_iteration_s", r["estimated_iteration_s"]))


def show(out: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"{args.dataset}, {args.clients} clients ({args.partition}), ipc {args.ipc}, "
        f"ConvNet d{args.depth}w{args.width}, batch_real {args.batch_real} "
        f"({args.batch_mode}), {args.threads} threads; outer {out['outer_loop']}, "
        f"inner {out['inner_loop']}"
    )
    print(f"peak eager fwd+bwd: {out['peak_flops'] / 1e9:.1f} GFLOP/s (batch {out['peak_batch']})")
    steps = max(out["inner_loop"], 1)
    print(
        f"inner loop ({out['inner_loop']} epochs on S): eager {out['inner_loop_s']:.2f} s "
        f"({out['inner_loop_s'] / steps * 1e3:.0f} ms/step)"
    )
    if "inner_loop_compiled_s" in out:
        print(
            f"inner loop compiled: {out['inner_loop_compiled_s']:.2f} s "
            f"({out['inner_loop_compiled_s'] / steps * 1e3:.0f} ms/step; first loop with "
            f"compilation {out['first_compiled_loop_s']:.1f} s)"
        )
    reference = DC_SECONDS_PER_ITERATION.get(args.ipc)
    for name in (*GRADIENT_PATHS, "dc-style"):
        if name not in out:
            continue
        r = out[name]
        rate = r["client_flops"] / r["client_s"] / 1e9
        print(
            f"[{name}] matching step: client {r['client_s']:.3f} s (min "
            f"{r['client_s_min']:.3f}), server match {r['match_s']:.3f} s; client work "
            f"{r['client_flops'] / 1e9:.2f} GFLOP at {rate:.1f} GFLOP/s = "
            f"{r['efficiency']:.2f} of peak"
        )
        it = iteration_seconds(r)
        line = f"[{name}] iteration: estimated {r['estimated_iteration_s']:.1f} s"
        if "measured_iteration_s" in r:
            line += f", measured {r['measured_iteration_s']:.1f} s"
        if reference is not None and args.batch_real == 256 and args.width == 32:
            line += f"; notes' DC {reference:.1f} s → ×{reference / it:.2f}"
        if "dc-style" in out and name != "dc-style":
            base = iteration_seconds(out["dc-style"])
            line += f"; in-situ DC-style {base:.1f} s → ×{base / it:.2f}"
        print(line)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    setup = build_setup(args)
    out = report(args, setup)
    show(out, args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
