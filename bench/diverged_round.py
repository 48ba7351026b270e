"""Seconds per FedAvg round of a diverging candidate, with and without the divergence stop.

``local_train`` stops a client at the first step that leaves its weights non-finite (see
:func:`distdd_nas.training.train_model`): the server drops a non-finite update whenever it was
computed. This runs real FedAvg on the quickstart federation for a candidate that diverges at the
study's lr (``make demo`` validated one: ConvNet-d3w32, leaky ReLU, no normalisation, no pooling;
its 16 rounds took 173 s of the demo's 12 min) and for the reference (which does not diverge, a
control), each with the stop and without it, interleaved, on the same threads. It prints median
seconds per round, the ratio, and checks that both ways give bit-identical global weights and
the same round history.

    python bench/diverged_round.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distdd_nas.config import load_config
from distdd_nas.fedavg.server import FedAvgResult, run_fedavg
from distdd_nas.fedavg.tasks import evaluate, local_train
from distdd_nas.federation import InProcessEngine
from distdd_nas.models import ArchSpec
from distdd_nas.study import Study

REPO = Path(__file__).resolve().parents[1]
DIVERGING = {"act": "leakyrelu", "norm": "none", "pool": "none"}


def run(study: Study, arch: ArchSpec, rounds: int, *, stop: bool) -> FedAvgResult:
    task = functools.partial(local_train, stop_if_diverged=stop)
    fed = study.federation
    engine = InProcessEngine(
        clients=fed.clients, tasks={"local_train": task, "evaluate": evaluate}
    )
    settings = dataclasses.replace(study.fedavg_settings, rounds=rounds, eval_every=rounds)
    return run_fedavg(
        engine, arch=arch, test=fed.test, settings=settings, seed=study.config.study.seed
    )


def same(a: FedAvgResult, b: FedAvgResult) -> bool:
    weights = all(np.array_equal(a.parameters[k], b.parameters[k]) for k in a.parameters)
    cols = [c for c in a.history.columns if c != "wall_s"]
    return weights and a.history[cols].equals(b.history[cols])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("distdd_nas").setLevel(logging.ERROR)  # one warning per rejected update
    study = Study(load_config(REPO / "studies" / "quickstart.toml"))
    archs = {
        "diverging": ArchSpec.from_dict({**study.reference.to_dict(), **DIVERGING}),
        "reference": study.reference,
    }
    print(
        f"FedAvg on the quickstart federation, {args.rounds} rounds, {args.threads} thread(s), "
        f"median of {args.repeats}, seconds per round"
    )
    print(f"{'candidate':<10} {'stop':>7} {'no stop':>8} {'ratio':>6} {'rejected':>9} identical")
    for name, arch in archs.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        results: dict[bool, FedAvgResult] = {}
        for _ in range(args.repeats):
            for stop in (True, False):  # interleaved, so drift hits both alike
                start = time.perf_counter()
                results[stop] = run(study, arch, args.rounds, stop=stop)
                times[stop].append((time.perf_counter() - start) / args.rounds)
        with_stop, without = statistics.median(times[True]), statistics.median(times[False])
        rejected = int(results[True].history["rejected"].sum())
        print(
            f"{name:<10} {with_stop:>7.2f} {without:>8.2f} {with_stop / without:>5.2f}x "
            f"{rejected:>9} {same(results[True], results[False])}"
        )


if __name__ == "__main__":
    main()
