"""Engine overhead: seconds per DistDD matching step and per FedAvg round, in-process vs Flower.

For each client count the same study runs on the in-process engine and on Flower's simulation
runtime (Ray). Flower's start-up (Ray, actors importing torch) is reported apart from the
per-round figures; the ratio compares per-round time on the same machine in the same run.
Peak RSS of this process and of the whole process tree (Ray actors) are printed too.

    python bench/engine_overhead.py                       # 10 and 50 clients, digits
    python bench/engine_overhead.py --clients 10 --dataset fashion_mnist
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_mb() -> tuple[float, float]:
    """(this process, reaped children) peak RSS in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--steps", type=int, default=4, help="DistDD matching steps")
    parser.add_argument("--rounds", type=int, default=3, help="FedAvg rounds")
    args = parser.parse_args()

    from distdd_nas.config import load_config
    from distdd_nas.federation.flower.runtime import run_on_simulation
    from distdd_nas.stages.on_engine import SERVER_FNS, on_configured_engine
    from distdd_nas.study import Study

    print(
        f"{'clients':>7} {'algorithm':>9} {'in-process s/round':>19} {'flower s/round':>15} "
        f"{'ratio':>6} {'flower start-up s':>18}"
    )
    for n in args.clients:
        overrides = [
            f"data.name={args.dataset}",
            f"partition.num_clients={n}",
            "partition.min_size=2",
            "distill.ipc=1",
            "distill.iterations=1",
            f"distill.outer_loop={args.steps}",
            "distill.inner_loop=1",
            f"fedavg.rounds={args.rounds}",
            "fedavg.local_epochs=1",
            "model.width=16",
            "model.depth=2",
        ]
        config = load_config(REPO / "studies" / "smoke.toml", overrides)
        flower = load_config(
            REPO / "studies" / "smoke.toml", [*overrides, "federation.engine=flower"]
        )
        study = Study(config)
        for algorithm, count in (("distill", args.steps + 1), ("fedavg", args.rounds)):
            on_configured_engine(study, algorithm)  # warm-up: one-time imports and allocations
            start = time.perf_counter()
            on_configured_engine(study, algorithm)
            local = (time.perf_counter() - start) / count
            with tempfile.TemporaryDirectory() as tmp:
                run = run_on_simulation(flower, server_fn=SERVER_FNS[algorithm], out_dir=Path(tmp))
            remote = run.timings["rounds"] / count
            print(
                f"{n:>7} {algorithm:>9} {local:>19.3f} {remote:>15.3f} {remote / local:>6.1f} "
                f"{run.timings['startup']:>18.1f}"
            )
    own, kids = peak_mb()
    print(f"peak RSS: this process {own:.0f} MiB, largest child {kids:.0f} MiB")


if __name__ == "__main__":
    main()
