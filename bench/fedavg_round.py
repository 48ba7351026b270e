"""Seconds per FedAvg round and peak memory for 10 and 100 clients on Fashion-MNIST.

Each client count runs in its own process so peak RSS is measured separately. The in-process
engine keeps clients as index views on one dataset, so memory beyond the data should grow only by
the model copies in flight (one reply per selected client), not with the data per client.

    python bench/fedavg_round.py                 # 10 and 100 clients, 3 rounds each
    python bench/fedavg_round.py --clients 10 50 100 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(clients: int, rounds: int, dataset: str) -> dict[str, float]:
    import torch

    from distdd_nas.config import load_config
    from distdd_nas.fedavg.server import run_fedavg
    from distdd_nas.models import build_model, count_parameters
    from distdd_nas.study import Study

    torch.set_num_threads(2)
    config = load_config(
        REPO / "studies" / "quickstart.toml",
        [
            f"data.name={dataset}",
            f"partition.num_clients={clients}",
            "partition.min_size=5",
            f"fedavg.rounds={rounds}",
            "fedavg.eval_every=1000",
        ],
    )
    study = Study(config)
    fed = study.federation
    after_data = rss_mb()
    engine = study.make_engine()
    times: list[float] = []
    last = time.perf_counter()

    def on_round(_: dict[str, float]) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now

    run_fedavg(
        engine,
        arch=study.reference,
        test=fed.test,
        settings=study.fedavg_settings,
        seed=0,
        on_round=on_round,
    )
    model = build_model(
        study.reference, input_shape=fed.train.input_shape, num_classes=fed.num_classes
    )
    return {
        "clients": clients,
        "s_per_round_median": statistics.median(times),
        "rss_after_data_mb": after_data,
        "rss_peak_mb": rss_mb(),
        "model_mb": count_parameters(model) * 4 / 2**20,
        "train_examples": len(fed.train),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.rounds, args.dataset)))
        return
    rows = []
    for n in args.clients:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                str(n),
                "--rounds",
                str(args.rounds),
                "--dataset",
                args.dataset,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"FedAvg on {args.dataset}, quickstart model, 1 local epoch, {args.rounds} rounds")
    print(
        f"{'clients':>8} {'s/round':>9} {'rss data MB':>12} {'rss peak MB':>12} {'growth MB':>10}"
        f" {'model MB':>9}"
    )
    for r in rows:
        growth = r["rss_peak_mb"] - r["rss_after_data_mb"]
        print(
            f"{r['clients']:>8} {r['s_per_round_median']:>9.2f} {r['rss_after_data_mb']:>12.0f}"
            f" {r['rss_peak_mb']:>12.0f} {growth:>10.0f} {r['model_mb']:>9.3f}"
        )
    base, top = rows[0], rows[-1]
    print(
        f"ratio {top['clients']}/{base['clients']} clients: time "
        f"{top['s_per_round_median'] / base['s_per_round_median']:.2f}x, peak memory "
        f"{top['rss_peak_mb'] / base['rss_peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
