"""Seconds per DC iteration (product vs a plain DC-style loop) and per quickstart matching step
(this tree vs another checkout), in one run, on the same threads, interleaved, as medians.

**DC configuration** (DC's Fashion-MNIST ipc 10 setting, sized for a CPU by width): one client
holding all 60,000 Fashion-MNIST training images, ipc 10, batch_real 256, outer_loop 10,
inner_loop 50, ConvNet-32 (depth 3, instance norm, ReLU, avg pooling), DC's learning rates.

* *product*: one iteration of the library's own loop, :func:`~distdd_nas.distill.run_distill`
  on :func:`~distdd_nas.distill.centralized_engine` (class gradients through the engine, the
  server's match step, DC's inner loop on the synthetic set); seconds = the history row's
  ``client_s + match_s + update_s`` (the census and the initial images are set-up, not timed).
* *plain*: :func:`plain_dc_iteration`, the loop the way DC's ``main.py`` writes it: a fresh
  network; per matching step, per class, a random batch of ``batch_real`` real images, one
  forward/backward for ∇θ on them, one forward on the class's synthetic images with a
  create_graph gradient, DC's layer-wise distance; one ``loss.backward()`` and an SGD step
  (momentum 0.5) on the images; between steps ``inner_loop`` epochs of SGD on the whole
  synthetic set in batches of 256 (one batch of 100 at ipc 10). Same weights as the
  product's network, but DC's layers: ``nn.AvgPool2d`` where the library's ConvNet uses its
  bit-identical :class:`~distdd_nas.models.pooling.AvgPool2x2`. DC's per-epoch DataLoader and
  accuracy bookkeeping are left out (they would only make the plain loop slower).

Each iteration runs in a fresh interpreter (a short warm-up iteration first), because the
library sets a process-wide allocator policy (:mod:`distdd_nas.allocator`, called by
``run_distill`` and the CLI) that DC's code does not; the variants alternate (the order
reverses every repeat). ``--attribution`` adds the plain loop with that allocator policy and
the library without it (``DISTDD_NAS_MALLOC=default``), to show what each change buys;
``--eager`` the library with its inner loop in eager PyTorch (``distill.compile = "off"``);
``--baseline-tree`` the library's loop of that checkout (``baseline``). The product runs as a
study of DC's configuration does: DC's 1,000 iterations take 450,000 inner-loop steps, so
``distill.compile = "auto"`` compiles its inner loop (:mod:`distdd_nas.distill.compiled`); the
one-off compilation happens in the warm-up, whose seconds are reported per variant (compiled
minus eager: the compilation, to be spread over the run's 1,000 iterations). The target is
product / plain ≤ 0.6.

**Quickstart** (``studies/quickstart.toml``: 10 clients, Dirichlet 0.5, Fashion-MNIST
max_train 12,000, ConvNet-32, ipc 10, batch_real 32, float16 uploads, FedSGD-like network
update): seconds per matching step = (``client_s + match_s + update_s``) / steps of one
``run_distill`` iteration of ``--quick-steps`` steps after a 2-step warm-up, each measurement
in a fresh interpreter whose ``PYTHONPATH`` is this tree or ``--baseline-tree`` (e.g. a
``git worktree add /tmp/base ee29394``), alternating; target: the baseline's median ≥ 3× ours.
``--floor`` alternates a third run with them: ``bench/step_floor.py``, the same arithmetic as
this tree's step without its per-client, per-class split, at the fastest batch sizes — the
least a step can take on this machine's kernels — and prints the target against it.

    git worktree add /tmp/base ee29394
    OMP_NUM_THREADS=1 python bench/dc_iteration.py --threads 1 --repeats 3 \\
        --quick-repeats 5 --baseline-tree /tmp/base --json /tmp/dc_iteration.json
    OMP_NUM_THREADS=1 python bench/dc_iteration.py --threads 1 --skip-dc --floor \\
        --quick-repeats 5 --baseline-tree /tmp/base
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import distdd_nas
from distdd_nas.config import DistillSection, load_config
from distdd_nas.data import ImageDataset, load_dataset
from distdd_nas.distill import centralized_engine, run_distill
from distdd_nas.distill.matching import layerwise_cosine
from distdd_nas.models import ArchSpec, build_model
from distdd_nas.stages.on_engine import distill_on
from distdd_nas.study import Study

try:  # absent from older checkouts (the --baseline-tree runs import this file too)
    from distdd_nas.allocator import tune_malloc
    from distdd_nas.models.pooling import AvgPool2x2

    FAST_POOLS: tuple[type[nn.Module], ...] = (AvgPool2x2,)
except ImportError:
    FAST_POOLS = ()

    def tune_malloc() -> bool:
        """An older checkout has no allocator policy: nothing to set."""
        return False


HERE = Path(__file__).resolve().parents[1]
ARCH = ArchSpec(depth=3, width=32)
#: DC's ipc-10 configuration (outer 10, inner 50, batch_real 256; lr_img 0.1, lr_net 0.01).
DC = DistillSection(ipc=10, iterations=1, outer_loop=10, inner_loop=50, batch_real=256)
#: DC's whole run (1,000 iterations): what ``distill.compile = "auto"`` resolves for.
DC_RUN = DC.model_copy(update={"iterations": 1000})


Parts = dict[str, float]


def dc_run_compiles() -> bool:
    """Whether a study of :data:`DC_RUN` compiles its inner loop (``distill.compile`` auto)."""
    try:
        from distdd_nas.distill import compiles
    except ImportError:  # a --baseline-tree from before distill.compile: its loop is eager
        return False
    return compiles(DC_RUN)


def product_iteration(
    train: ImageDataset, settings: DistillSection, seed: int, *, compile: bool | None = None
) -> Parts:
    """Seconds of one iteration of the library's loop on one client holding ``train``:
    ``total`` and its parts ``real`` (the engine round: class gradients + aggregation),
    ``match`` and ``inner`` (through torch.compile when ``compile``; None: as a study of
    :data:`DC_RUN` resolves ``distill.compile``)."""
    compile = dc_run_compiles() if compile is None else compile
    engine = centralized_engine(train, np.arange(len(train)))
    result = run_distill(
        engine,
        arch=ARCH,
        input_shape=train.input_shape,
        num_classes=train.num_classes,
        settings=settings,
        seed=seed,
        compile=compile,
    )
    row = result.history.iloc[-1]
    parts = {"real": row["client_s"], "match": row["match_s"], "inner": row["update_s"]}
    return {"total": float(sum(parts.values())), **{k: float(v) for k, v in parts.items()}}


def plain_dc_iteration(train: ImageDataset, settings: DistillSection, seed: int) -> Parts:
    """Seconds of one iteration of DC's loop written plainly (see the module docstring), with
    the parts of :func:`product_iteration`."""
    classes, ipc = train.num_classes, settings.ipc
    assert settings.outer_loop is not None and settings.inner_loop is not None
    gen = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(train.labels == c).flatten() for c in range(classes)]
    images = torch.randn((classes * ipc, *train.input_shape), generator=gen).requires_grad_()
    labels = torch.arange(classes).repeat_interleave(ipc)
    opt_img = torch.optim.SGD([images], lr=settings.lr_img, momentum=settings.momentum_img)
    parts = {"real": 0.0, "match": 0.0, "inner": 0.0}
    t0 = time.perf_counter()
    net = dc_layers(
        build_model(ARCH, input_shape=train.input_shape, num_classes=classes, seed=seed)
    )
    net.train()
    params = list(net.parameters())
    opt_net = torch.optim.SGD(params, lr=settings.lr_net)
    for ol in range(settings.outer_loop):
        loss = images.new_zeros(())
        for c in range(classes):
            t1 = time.perf_counter()
            pick = by_class[c][torch.randperm(len(by_class[c]), generator=gen)]
            real = train.images[pick[: settings.batch_real]]
            out = net(real)
            g_real = torch.autograd.grad(F.cross_entropy(out, torch.full((len(real),), c)), params)
            g_real = tuple(g.detach().clone() for g in g_real)
            t2 = time.perf_counter()
            y_syn = labels[c * ipc : (c + 1) * ipc]
            out_syn = net(images[c * ipc : (c + 1) * ipc])
            g_syn = torch.autograd.grad(F.cross_entropy(out_syn, y_syn), params, create_graph=True)
            loss = loss + layerwise_cosine(g_syn, g_real)
            parts["real"] += t2 - t1
            parts["match"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        opt_img.zero_grad()
        loss.backward()
        opt_img.step()
        parts["match"] += time.perf_counter() - t3
        if ol == settings.outer_loop - 1:
            break
        t4 = time.perf_counter()
        x = images.detach().clone()
        for _ in range(settings.inner_loop):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), settings.batch_syn):
                idx = order[start : start + settings.batch_syn]
                opt_net.zero_grad()
                F.cross_entropy(net(x[idx]), labels[idx]).backward()
                opt_net.step()
        parts["inner"] += time.perf_counter() - t4
    return {"total": time.perf_counter() - t0, **parts}


def dc_layers(net: nn.Module) -> nn.Module:
    """``net`` with DC's ``nn.AvgPool2d(2, 2)`` in place of the library's AvgPool2x2."""
    for module in list(net.modules()):
        for child, layer in list(module.named_children()):
            if isinstance(layer, FAST_POOLS):
                setattr(module, child, nn.AvgPool2d(kernel_size=2, stride=2))
    return net


#: The DC-configuration variants a child process can time (``--dc-child``): the library's
#: loop, the plain loop, and for attribution the plain loop with the library's allocator
#: setting and the library with glibc's default allocator policy.
VARIANTS: dict[str, tuple[Callable[[ImageDataset, DistillSection, int], Parts], bool]] = {
    "product": (product_iteration, True),
    "plain": (plain_dc_iteration, False),
    "plain+malloc": (plain_dc_iteration, True),
    "product-default-malloc": (product_iteration, False),
    "product-eager": (functools.partial(product_iteration, compile=False), True),
}


def dc_child(variant: str, seed: int) -> dict[str, Any]:
    """In this interpreter: one timed DC iteration of ``variant`` after a short warm-up, and
    where ``distdd_nas`` was imported from."""
    fn, tuned = VARIANTS[variant]
    if tuned:
        tune_malloc()  # run_distill does it itself; the plain loop only for attribution
    train = load_dataset("fashion_mnist", seed=0).train
    start = time.perf_counter()
    fn(train, DC.model_copy(update={"outer_loop": 2, "inner_loop": 1}), seed)
    warmup = time.perf_counter() - start
    return {**fn(train, DC, seed), "warmup": warmup, "package": distdd_nas.__file__}


def dc_in(variant: str, seed: int, args: argparse.Namespace) -> Parts:
    """:func:`dc_child` in a fresh interpreter (allocator settings are per process);
    ``baseline`` is the library's loop imported from ``--baseline-tree``."""
    tree = args.baseline_tree.resolve() if variant == "baseline" else HERE
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads)]
    cmd += ["--dc-child", "product" if variant == "baseline" else variant, "--seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(tree)}
    if variant == "product-default-malloc":
        env["DISTDD_NAS_MALLOC"] = "default"
    done = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True)
    got = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    assert str(got.pop("package")).startswith(str(tree)), f"{variant} did not import {tree}"
    return got


def dc_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating product and plain iterations at DC's configuration, one per process."""
    variants = ["product", "plain"]
    variants += ["plain+malloc", "product-default-malloc"] if args.attribution else []
    variants += ["product-eager"] if args.eager else []
    variants += ["baseline"] if args.baseline_tree is not None else []
    times: dict[str, list[Parts]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name in variants if r % 2 == 0 else variants[::-1]:
            times[name].append(dc_in(name, r, args))
            got = times[name][-1]
            print(
                f"  DC iteration, repeat {r + 1}/{args.repeats}, {name}: {got['total']:.2f} s "
                f"(real {got['real']:.2f}, match {got['match']:.2f}, inner {got['inner']:.2f})"
            )
    out: dict[str, Any] = {"times": times}
    for name, items in times.items():
        for part in ("total", "real", "match", "inner", "warmup"):
            out[f"{name}_{part}_s"] = statistics.median(x[part] for x in items)
    return out


def quick_child(steps: int) -> dict[str, Any]:
    """In this interpreter's tree: seconds per quickstart matching step (after a warm-up)."""
    timed: dict[str, float] = {}
    for n in (2, steps):
        config = load_config(
            "quickstart", values={"distill.iterations": 1, "distill.outer_loop": n}
        )
        study = Study(config)
        row = distill_on(study, study.make_engine()).history.iloc[-1]
        timed = {k: float(row[k]) / n for k in ("client_s", "match_s", "update_s")}
    return {"step_s": sum(timed.values()), **timed, "package": distdd_nas.__file__}


def quick_in(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`quick_child` in a fresh interpreter importing ``distdd_nas`` from ``tree``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads)]
    cmd += ["--quick-child", "--quick-steps", str(args.quick_steps)]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def floor_in(args: argparse.Namespace) -> dict[str, Any]:
    """``bench/step_floor.py``'s floor of this tree's quickstart step, in a fresh interpreter."""
    cmd = [sys.executable, str(HERE / "bench" / "step_floor.py"), "--json"]
    cmd += ["--threads", str(args.threads), "--repeats", "3"]
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, cwd=HERE, env=env, check=True, capture_output=True, text=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {"step_s": r["floor_s"], "client_s": r["client"]["s"], "match_s": r["match"]["s"]}


def quick_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """This tree's and the baseline tree's seconds per quickstart step (and, with ``--floor``,
    the step's floor), alternating."""
    trees = {"now": HERE}
    if args.baseline_tree is not None:
        trees["baseline"] = args.baseline_tree.resolve()
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        name: functools.partial(quick_in, tree, args) for name, tree in trees.items()
    }
    if args.floor:
        runs["floor"] = functools.partial(floor_in, args)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for r in range(args.quick_repeats):
        for name in sorted(runs, reverse=r % 2 == 1):
            rows[name].append(runs[name]())
            if name in trees:
                assert rows[name][-1]["package"].startswith(str(trees[name])), rows[name][-1]
            print(f"  quickstart, repeat {r + 1}, {name}: {rows[name][-1]['step_s']:.3f} s/step")
    out: dict[str, Any] = {"rows": rows, "trees": {k: str(v) for k, v in trees.items()}}
    for name, items in rows.items():
        for key in ("step_s", "client_s", "match_s"):
            out[f"{name}_{key}"] = statistics.median(x[key] for x in items)
    return out


def show(
    dc: dict[str, Any] | None, quick: dict[str, Any] | None, args: argparse.Namespace
) -> None:
    """Print the figures and whether each target is met."""
    print(f"threads {args.threads}; load average {os.getloadavg()}")
    if dc is not None:
        ratio = dc["product_total_s"] / dc["plain_total_s"]
        print(
            f"DC iteration (1 client, all Fashion-MNIST, ipc 10, batch_real 256, outer 10, "
            f"inner 50, ConvNet-32), median of {args.repeats}: product "
            f"{dc['product_total_s']:.2f} s, plain DC-style loop {dc['plain_total_s']:.2f} s "
            f"→ ratio {ratio:.2f} (target ≤ 0.6: {'met' if ratio <= 0.6 else 'NOT met'})"
        )
        if "baseline_total_s" in dc:
            print(
                f"  product vs --baseline-tree's loop: {dc['baseline_total_s']:.2f} s → "
                f"{dc['baseline_total_s'] / dc['product_total_s']:.2f}× faster"
            )
        for name in dc["times"]:
            print(
                f"  {name}: total {dc[f'{name}_total_s']:.2f} s = real "
                f"{dc[f'{name}_real_s']:.2f} + match {dc[f'{name}_match_s']:.2f} + inner "
                f"{dc[f'{name}_inner_s']:.2f}; warm-up {dc[f'{name}_warmup_s']:.1f} s"
            )
        if "product-eager_total_s" in dc:
            once = dc["product_warmup_s"] - dc["product-eager_warmup_s"]
            spread = (dc["product_total_s"] * 1000 + once) / 1000
            print(
                f"  the product compiles (distill.compile auto at DC's 1,000 iterations): "
                f"one-off ≈ {once:.1f} s (warm-ups, compiled − eager); spread over the run, "
                f"{spread:.2f} s an iteration → ratio {spread / dc['plain_total_s']:.2f}; "
                f"eager: ratio {dc['product-eager_total_s'] / dc['plain_total_s']:.2f}"
            )
    if quick is not None:
        line = (
            f"quickstart matching step, median of {args.quick_repeats}: now "
            f"{quick['now_step_s']:.3f} s (client {quick['now_client_s']:.3f}, match "
            f"{quick['now_match_s']:.3f})"
        )
        if "baseline_step_s" in quick:
            speedup = quick["baseline_step_s"] / quick["now_step_s"]
            line += (
                f"; baseline {quick['baseline_step_s']:.3f} s (client "
                f"{quick['baseline_client_s']:.3f}, match {quick['baseline_match_s']:.3f}) → "
                f"{speedup:.2f}× faster (target ≥ 3: {'met' if speedup >= 3 else 'NOT met'})"
            )
        print(line)
        if "floor_step_s" in quick and "baseline_step_s" in quick:
            target = quick["baseline_step_s"] / 3
            print(
                f"  floor of the step's arithmetic on these kernels (bench/step_floor.py): "
                f"{quick['floor_step_s']:.3f} s (client {quick['floor_client_s']:.3f}, match "
                f"{quick['floor_match_s']:.3f}) = {quick['floor_step_s'] / target:.2f}× the "
                f"target (baseline / 3 = {target:.3f} s: "
                f"{'above' if target >= quick['floor_step_s'] else 'below'} the floor); now "
                f"= {quick['now_step_s'] / quick['floor_step_s']:.2f}× the floor"
            )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="DC iterations per loop")
    p.add_argument("--quick-repeats", type=int, default=5, help="quickstart runs per tree")
    p.add_argument("--quick-steps", type=int, default=10, help="timed steps per quickstart run")
    p.add_argument(
        "--baseline-tree", type=Path, help="checkout to time the library against (both parts)"
    )
    p.add_argument("--skip-dc", action="store_true")
    p.add_argument("--skip-quick", action="store_true")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument(
        "--attribution",
        action="store_true",
        help="also time the plain loop with the library's allocator setting and the library "
        "without it",
    )
    p.add_argument(
        "--eager",
        action="store_true",
        help='also time the library with its inner loop eager (distill.compile = "off")',
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also time bench/step_floor.py's floor of the quickstart step (same threads)",
    )
    p.add_argument("--quick-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dc-child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.quick_child:
        print(json.dumps(quick_child(args.quick_steps)))
        return
    if args.dc_child:
        print(json.dumps(dc_child(args.dc_child, args.seed)))
        return
    print(f"$ {shlex.join(sys.argv)}; load average {os.getloadavg()}")
    dc = None if args.skip_dc else dc_comparison(args)
    quick = None if args.skip_quick else quick_comparison(args)
    show(dc, quick, args)
    if args.json is not None:
        payload = {"argv": sys.argv, "threads": args.threads, "dc": dc, "quick": quick}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
