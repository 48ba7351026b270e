"""Seconds per test-set evaluation by batch size: why ``evaluate_model`` uses batches of 64.

FedAvg evaluates the global model on the server's test set every round, DC's protocol once per
evaluation network. This times :func:`distdd_nas.training.evaluate_model` on the quickstart's
Fashion-MNIST test split (10,000 images) for the study's reference ConvNet and a wider one, at
each batch size, on the same threads, interleaved, as medians; it prints the ratio of each to
batches of 1,024 (the default before) and checks that accuracy does not depend on the batch.

    python bench/evaluate_batch.py --threads 1
    python bench/evaluate_batch.py --threads 2 --widths 32 64 --batches 1024 256 64 32
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from distdd_nas.config import load_config
from distdd_nas.models import ArchSpec, build_model
from distdd_nas.study import Study
from distdd_nas.training import evaluate_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 256, 64, 32])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = Study(load_config(REPO / "studies" / "quickstart.toml"))
    test = study.federation.test
    print(
        f"test-set evaluation, {len(test)} Fashion-MNIST images, {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    print(f"{'width':>6} {'batch':>6} {'seconds':>8} {'÷ batch 1024':>13} {'accuracy':>9}")
    for width in args.widths:
        arch = ArchSpec.from_dict({**study.reference.to_dict(), "width": width})
        model = build_model(arch, input_shape=test.input_shape, num_classes=test.num_classes)
        times: dict[int, list[float]] = {b: [] for b in args.batches}
        accuracy: dict[int, float] = {}
        for _ in range(args.repeats):
            for batch in args.batches:  # interleaved, so drift hits every batch size alike
                start = time.perf_counter()
                _, accuracy[batch], _ = evaluate_model(
                    model, test.images, test.labels, batch_size=batch
                )
                times[batch].append(time.perf_counter() - start)
        base = statistics.median(times[1024]) if 1024 in times else float("nan")
        for batch in args.batches:
            seconds = statistics.median(times[batch])
            print(
                f"{width:>6} {batch:>6} {seconds:>8.2f} {seconds / base:>12.2f}x "
                f"{accuracy[batch]:>9.4f}"
            )
        if len(set(accuracy.values())) != 1:
            print(f"  accuracy differs between batch sizes: {accuracy}")


if __name__ == "__main__":
    main()
