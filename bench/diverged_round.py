"""Seconds per FedAvg round of a diverging candidate, with and without the divergence stop.

``local_train`` stops a client at the first step whose loss and weights are non-finite (see
:func:`distdd_nas.training.train_model`): the server drops a non-finite update whenever it was
computed. This runs real FedAvg on the quickstart federation for a candidate that diverges at the
study's lr (ConvNet-d3w32, leaky ReLU, no normalisation, no pooling: an earlier ``make demo``
validated it as the proxy's second pick; its 16 rounds took 173 s of that demo's 12 min 21 s) and
for the reference (which does not diverge: a control), each with the stop and without it,
interleaved in alternating order after a warm-up run, on the same threads. It prints the median
seconds of the whole run and of each round, the ratio and the rejected updates per round, and
exits 1 unless both ways give bit-identical global weights and the same round history.

    python bench/diverged_round.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import statistics
import sys
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


def round_seconds(result: FedAvgResult) -> np.ndarray:
    """Seconds of each round (the history's cumulative ``wall_s``, differenced)."""
    return np.diff(np.concatenate([[0.0], result.history["wall_s"].to_numpy()]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("distdd_nas").setLevel(logging.ERROR)  # one warning per rejected update
    study = Study(load_config(REPO / "studies" / "quickstart.toml"))
    archs = {
        "diverging": ArchSpec.from_dict({**study.reference.to_dict(), **DIVERGING}),
        "reference": study.reference,
    }
    run(study, study.reference, 1, stop=True)  # warm-up: data, partition, first torch calls
    print(
        f"FedAvg on the quickstart federation, {args.rounds} rounds, {args.threads} thread(s), "
        f"median of {args.repeats} (the order alternates), seconds"
    )
    print(
        f"{'candidate':<10} {'stop':>6} {'no stop':>8} {'ratio':>6}  per round: stop | no stop"
        "  (rejected per round)  identical"
    )
    all_same = True
    for name, arch in archs.items():
        per_round: dict[bool, list[np.ndarray]] = {True: [], False: []}
        results: dict[bool, FedAvgResult] = {}
        for i in range(args.repeats):
            for stop in (True, False) if i % 2 == 0 else (False, True):
                results[stop] = run(study, arch, args.rounds, stop=stop)
                per_round[stop].append(round_seconds(results[stop]))
        med = {k: np.median(np.stack(v), axis=0) for k, v in per_round.items()}
        total = {k: statistics.median(float(x.sum()) for x in v) for k, v in per_round.items()}
        rejected = results[True].history["rejected"].tolist()
        identical = same(results[True], results[False])
        all_same &= identical
        rounds = " ".join(f"{a:.1f}|{b:.1f}" for a, b in zip(med[True], med[False], strict=True))
        print(
            f"{name:<10} {total[True]:>6.1f} {total[False]:>8.1f} "
            f"{total[True] / total[False]:>5.2f}x  {rounds}  {rejected}  {identical}"
        )
    if not all_same:
        print("the stop changed a result: it must not", file=sys.stderr)
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
