"""The least time a quickstart matching step's arithmetic takes with this machine's PyTorch CPU
kernels: the floor under ``bench/dc_iteration.py``'s quickstart target (``--floor`` there runs
it in the same run, on the same threads, beside the step it bounds).

A matching step (:mod:`distdd_nas.distill.loop`) does two pieces of work:

* *client*: the selected clients' real-data gradients, a forward/backward of the network over
  every real image the step draws, split by client and class into batches of 1-32 images;
* *match*: the server's second-order step, a forward of the synthetic set (ipc × classes
  images) with a create_graph gradient per class, DC's distance to the aggregated gradients,
  and one backward into the images.

Here each is the *same* arithmetic without the per-client, per-class split: the real images
(as many as the study's seeded client selection and batch shares draw per step, mean over
:data:`STEPS` steps) in micro-batches of the fastest size in :data:`CLIENT_SIZES`, and the
synthetic set in chunks of the fastest size in :data:`MATCH_SIZES` (ipc, the product's
per-class batch, is one of them). The printed per-size times show that on these kernels a
smaller batch costs more per image, so ``client + match`` at the fastest sizes is a floor for
any exact implementation built on them: a step cannot take less without doing less arithmetic
or running it on faster kernels. FLOPs are counted with torch's FlopCounterMode.

    OMP_NUM_THREADS=1 python bench/step_floor.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from distdd_nas.allocator import tune_malloc
from distdd_nas.config import load_config
from distdd_nas.distill.matching import get_distance
from distdd_nas.distill.server import batch_shares, split_like
from distdd_nas.errors import ConfigError
from distdd_nas.federation.engine import select_clients
from distdd_nas.models import build_model
from distdd_nas.seeding import torch_generator
from distdd_nas.study import Study

#: Steps whose client selection and batch shares give the mean real images per step.
STEPS = 100
#: Micro-batch sizes tried for the real-data gradients (None: all images in one batch).
CLIENT_SIZES: tuple[int | None, ...] = (8, 16, 32, 64, None)
#: Chunk sizes tried for the second-order match (None: the whole synthetic set at once).
MATCH_SIZES: tuple[int | None, ...] = (10, 20, 50, None)


def real_images_per_step(study: Study) -> float:
    """Mean real images a matching step of ``study`` draws (its clients' batch shares)."""
    counts = study.federation.class_counts().to_numpy()
    settings = study.config.distill
    seed = study.config.study.seed
    total = 0
    for step in range(STEPS):
        selected = select_clients(
            num_clients=len(counts), fraction=study.distill_fraction, seed=seed, round=step
        )
        take = batch_shares(
            counts[selected], batch_real=settings.batch_real, mode=settings.batch_mode
        )
        total += int(take.sum())
    return total / STEPS


def client_work(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, size: int | None
) -> list[torch.Tensor]:
    """∇θ of the mean cross-entropy over ``x``, summed over micro-batches of ``size`` (as the
    clients sum theirs)."""
    params = [p for p in net.parameters() if p.requires_grad]
    step = len(x) if size is None else size
    total: list[torch.Tensor] = [torch.zeros_like(p) for p in params]
    for lo in range(0, len(x), step):
        loss = F.cross_entropy(net(x[lo : lo + step]), y[lo : lo + step], reduction="sum")
        grads = torch.autograd.grad(loss / len(x), params)
        total = [a + g for a, g in zip(total, grads, strict=True)]
    return total


def match_work(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: torch.Tensor,
    size: int | None,
    distance: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """The match's arithmetic on chunks of ``size`` synthetic images: a create_graph gradient
    per chunk, the distance to ``target``, one backward into ``images``; returns ∇ images.
    With ``size`` = ipc this is :func:`~distdd_nas.distill.server.match_loss` with ``target``
    for every class, and the product's backward."""
    params = [p for p in net.parameters() if p.requires_grad]
    step = len(images) if size is None else size
    loss = images.new_zeros(())
    for lo in range(0, len(images), step):
        out = net(images[lo : lo + step])
        g = torch.autograd.grad(
            F.cross_entropy(out, labels[lo : lo + step]), params, create_graph=True
        )
        loss = loss + distance(g, split_like(target, params))
    (grad,) = torch.autograd.grad(loss, [images])
    return grad


def _timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _fastest(
    work: Callable[[int | None], object], sizes: tuple[int | None, ...], repeats: int
) -> dict[str, Any]:
    """Median seconds of ``work`` at every size, the fastest size and its FLOPs."""
    seconds = {size: _timed(lambda size=size: work(size), repeats) for size in sizes}
    best = min(seconds, key=seconds.__getitem__)
    return {
        "s": seconds[best],
        "size": str(best or "all"),
        "by_size": {str(size or "all"): t for size, t in seconds.items()},
        "gflop": _flops(lambda: work(best)) / 1e9,
    }


def floor(study: Study, repeats: int = 5) -> dict[str, Any]:
    """The floor of one matching step of ``study`` (module docstring), with its parts."""
    tune_malloc()  # the product's allocator policy, as the step being bounded runs under
    train = study.federation.train
    settings = study.config.distill
    net = build_model(
        study.reference, input_shape=train.input_shape, num_classes=train.num_classes, seed=0
    )
    net.train()
    n_real = round(real_images_per_step(study))
    gen = torch_generator(study.config.study.seed, "bench", "step_floor")
    pick = torch.randperm(len(train), generator=gen)[:n_real]
    x, y = train.images[pick], train.labels[pick]
    n_syn = settings.ipc * train.num_classes
    images = torch.randn((n_syn, *train.input_shape), generator=gen).requires_grad_(True)
    labels = torch.arange(train.num_classes).repeat_interleave(settings.ipc)
    dim = sum(p.numel() for p in net.parameters() if p.requires_grad)
    target = torch.randn(dim, generator=gen)
    distance = get_distance(settings.distance)
    client = _fastest(lambda s: client_work(net, x, y, s), CLIENT_SIZES, repeats)
    match = _fastest(
        lambda s: match_work(net, images, labels, target, s, distance), MATCH_SIZES, repeats
    )
    return {
        "floor_s": client["s"] + match["s"],
        "real_images": n_real,
        "synthetic_images": n_syn,
        "client": client,
        "match": match,
        "threads": torch.get_num_threads(),
    }


def describe(result: dict[str, Any]) -> str:
    """Two lines: the floor and its parts, each at its fastest size, with GFLOP/s."""
    parts = []
    for name, images in (("client", "real_images"), ("match", "synthetic_images")):
        r = result[name]
        sizes = ", ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in r["by_size"].items())
        parts.append(
            f"  {name} ({result[images]} images): {r['s']:.3f} s in batches of {r['size']} "
            f"({r['gflop']:.2f} GFLOP, {r['gflop'] / r['s']:.1f} GFLOP/s); by batch size "
            f"{sizes}"
        )
    return f"step floor {result['floor_s']:.3f} s\n" + "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the floor (exit 2, one line, on a study it cannot load or a count
    below 1)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per batch size")
    p.add_argument("--study", default="quickstart", help="a shipped study or a study file")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args(argv)
    try:
        if args.threads < 1 or args.repeats < 1:
            raise ConfigError(
                f"--threads {args.threads} and --repeats {args.repeats} must both be >= 1"
            )
        study = Study(load_config(args.study))
    except ConfigError as err:
        print(f"step_floor: error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    result = floor(study, args.repeats)
    print(json.dumps(result) if args.json else describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
