"""Seconds per DistDD matching step and peak memory for 10, 100 and 500 in-process clients.

Each client count runs in its own subprocess, so that the peak resident set size
(``ru_maxrss``) belongs to one configuration. A configuration loads the study (by default the
quickstart on the *full* Fashion-MNIST train split: ``data.max_train=60000`` is no cap, as the
split has exactly 60,000 images), overrides ``partition.num_clients``, builds the federation
once (dataset, Dirichlet partition, client views), checks that every client's view shares the
storage of the one training tensor (clients hold index arrays, never image copies), and runs
the library's own DistDD loop (:func:`~distdd_nas.stages.on_engine.distill_on` on an
in-process engine) for ``--steps`` matching steps, as ``distill.iterations=steps`` with
``distill.outer_loop=1``: one history row per matching step, no network update between
steps, no DC evaluation. Seconds per step are the median over the steps of the row's
``client_s + match_s`` (the engine round with every participating client's per-class
gradients and the aggregation, plus the server's match); bytes up and participating clients
per step come from the engine's ledger.

    OMP_NUM_THREADS=1 python bench/scale.py --threads 1 --out bench/data/scale
    python bench/scale.py --study studies/smoke.toml --clients 4 8 --steps 2 --out /tmp/scale
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from distdd_nas.config import load_config
from distdd_nas.stages.on_engine import distill_on
from distdd_nas.study import Federation, Study

MB = 1e6
#: Overrides of every configuration: the full train split, one matching step per iteration.
BASE_OVERRIDES = ("data.max_train=60000", "distill.outer_loop=1", "distill.eval_every=0")
#: The table's columns, in order (the test checks them).
COLUMNS = (
    "clients",
    "participating",
    "steps",
    "s_per_step",
    "ms_per_step_per_client",
    "peak_rss_mb",
    "rss_federation_mb",
    "peak_rss_build_mb",
    "rss_start_mb",
    "train_mb",
    "index_mb",
    "views_share_storage",
    "up_mb_per_step",
    "build_s",
)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (``VmRSS``) or its peak (``VmHWM``) in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB: the larger of ``ru_maxrss`` (KiB on Linux) and
    ``VmHWM``. The kernel folds the current RSS into ``ru_maxrss`` lazily, so on its own it can
    read below the RSS right now; ``VmHWM`` takes the current RSS into account."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB, rss_mb("VmHWM"))


def views_share_storage(fed: Federation) -> bool:
    """True when every client's dataset is the training tensor itself: same storage, so the
    clients are index arrays on one copy of the images."""
    ptr = fed.train.images.untyped_storage().data_ptr()
    return all(c.dataset.images.untyped_storage().data_ptr() == ptr for c in fed.clients)


def per_step_ledger(ledger_frame: pd.DataFrame) -> tuple[float, float]:
    """(median participating clients, median MB up) over the matching steps of a ledger."""
    up = ledger_frame[
        (ledger_frame["kind"] == "class_gradients") & (ledger_frame["direction"] == "up")
    ]
    by_round = up.groupby("round").agg(clients=("client", "nunique"), nbytes=("bytes", "sum"))
    return float(by_round["clients"].median()), float(by_round["nbytes"].median() / MB)


def measure(
    study_path: str, clients: int, steps: int, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """One configuration in this process: build the federation, run ``steps`` matching steps,
    return one table row (:data:`COLUMNS`)."""
    start_rss = rss_mb()
    config = load_config(
        study_path,
        [*BASE_OVERRIDES, *overrides],
        values={"partition.num_clients": clients, "distill.iterations": steps},
    )
    study = Study(config)
    t0 = time.perf_counter()
    fed = study.federation
    build_s = time.perf_counter() - t0
    federation_rss, build_peak = rss_mb(), rss_mb("VmHWM")
    index_bytes = sum(c.train_indices.nbytes + c.holdout_indices.nbytes for c in fed.clients)
    engine = study.make_engine()
    result = distill_on(study, engine)
    step_s = (result.history["client_s"] + result.history["match_s"]).tolist()
    participating, up_mb = per_step_ledger(engine.ledger.to_frame())
    seconds = statistics.median(step_s)
    return {
        "clients": clients,
        "participating": participating,
        "steps": len(step_s),
        "s_per_step": seconds,
        "ms_per_step_per_client": seconds / participating * 1e3,
        "peak_rss_mb": peak_rss_mb(),
        "rss_federation_mb": federation_rss,
        "peak_rss_build_mb": build_peak,
        "rss_start_mb": start_rss,
        "train_mb": fed.train.images.nbytes / MB,
        "index_mb": index_bytes / MB,
        "views_share_storage": views_share_storage(fed),
        "up_mb_per_step": up_mb,
        "build_s": build_s,
    }


def run_child(args: argparse.Namespace, clients: int, steps: int) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter (its own peak RSS); returns its row."""
    with tempfile.TemporaryDirectory(prefix="distdd-scale-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--study", args.study, "--threads", str(args.threads)]
        cmd += ["--one", str(clients), "--steps", str(steps), "--row", str(out)]
        for item in args.set:
            cmd += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run(cmd, check=True, env=env)
        return json.loads(out.read_text())


def to_markdown(frame: pd.DataFrame) -> str:
    """The table as Markdown (numbers rounded for reading)."""
    shown = frame.copy()
    for col, digits in (("s_per_step", 2), ("ms_per_step_per_client", 1), ("build_s", 1)):
        shown[col] = shown[col].round(digits)
    megabytes = ("peak_rss_mb", "rss_federation_mb", "peak_rss_build_mb", "rss_start_mb")
    for col in (*megabytes, "train_mb", "up_mb_per_step"):
        shown[col] = shown[col].round(0).astype(int)
    shown["index_mb"] = shown["index_mb"].round(2)
    shown["participating"] = shown["participating"].astype(int)
    head = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def growth_note(frame: pd.DataFrame) -> str:
    """Ratios against the first configuration: step time vs participating clients, and how
    peak RSS grew next to the per-step upload and the RSS after building the federation."""
    base = frame.iloc[0]
    parts = []
    for _, row in frame.iloc[1:].iterrows():
        clients = row["participating"] / base["participating"]
        parts.append(
            f"{int(row['clients'])} clients: ×{clients:.0f} participating, "
            f"×{row['s_per_step'] / base['s_per_step']:.2f} seconds per step, "
            f"peak RSS ×{row['peak_rss_mb'] / base['peak_rss_mb']:.2f} "
            f"(+{row['peak_rss_mb'] - base['peak_rss_mb']:.0f} MB, while the step's upload grew "
            f"by {row['up_mb_per_step'] - base['up_mb_per_step']:.0f} MB; federation RSS "
            f"{row['rss_federation_mb'] - base['rss_federation_mb']:+.0f} MB)"
        )
    return "; ".join(parts)


def write_outputs(out: Path, frame: pd.DataFrame, header: str) -> str:
    """``scale.csv`` and ``scale.md`` (header, table, growth) under ``out``; returns the text."""
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "scale.csv", index=False)
    text = f"{header}\n\n{to_markdown(frame)}\n\n{growth_note(frame)}\n"
    (out / "scale.md").write_text(text, encoding="utf-8")
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", default="studies/quickstart.toml")
    p.add_argument("--clients", type=int, nargs="+", default=[10, 100, 500])
    p.add_argument("--steps", type=int, default=5, help="matching steps per configuration")
    p.add_argument(
        "--steps-at",
        action="append",
        default=[],
        metavar="CLIENTS=STEPS",
        help="fewer steps for a large configuration, e.g. 500=3",
    )
    p.add_argument("--set", action="append", default=[], help="extra study override")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/data/scale"))
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one configuration
    p.add_argument("--row", type=Path, help=argparse.SUPPRESS)  # child: where its row goes
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one is not None:
        row = measure(args.study, args.one, args.steps, args.set)
        args.row.write_text(json.dumps(row, default=float))
        return
    steps_at = {int(k): int(v) for k, v in (s.split("=", 1) for s in args.steps_at)}
    load = os.getloadavg()
    rows = []
    for n in args.clients:
        rows.append(run_child(args, n, steps_at.get(n, args.steps)))
        print(json.dumps(rows[-1], default=float), flush=True)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    command = "OMP_NUM_THREADS=1 python " + shlex.join(["bench/scale.py", *sys.argv[1:]])
    header = (
        f"Scale, {datetime.date.today()}: `{command}` ({args.study}, "
        f"{' '.join(BASE_OVERRIDES)}; {args.threads} thread(s); load average at the start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores, shared)"
    )
    print(write_outputs(args.out, frame, header))


if __name__ == "__main__":
    main()
