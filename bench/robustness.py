"""Faulty federations measured: distilled and FedAvg accuracy under failing, Byzantine and
mislabeled clients, for each aggregator.

One *unit* is (condition, algorithm): a DistDD distillation of the study's set evaluated with
DC's protocol (``distill.eval``: networks × epochs on the server test set), or a FedAvg run of
the study's reference model (``fedavg.rounds``). A condition is a list of ``--set`` overrides
on the study:

* ``clean``: no fault;
* ``fail30``: 30 % of deliveries fail (``federation.failure_rate=0.3``; rounds short of
  ``min_replies`` are retried, then skipped);
* ``byz20-<kind>``: 20 % of clients Byzantine (``non_finite``, ``scale`` ×100, ``sign_flip``,
  ``noise``), every one an honest computation corrupted before upload;
* ``noisy30``: 30 % of clients with 50 % symmetric label noise (the DistDD paper's setting);

each under every aggregator (``mean`` behind the default guard, ``median``, ``trimmed_mean``
with trim 0.2, ``centered_clip``), the same aggregator for DistDD's class gradients and
FedAvg's updates. Units are appended to ``OUT/units.csv`` as they finish (resumable: a unit
whose row is there with the same configuration fingerprint is not rerun); ``OUT/robustness.md``
is the table of what is done, rewritten after every unit. Order: the decisive cells first, so
a partial table still answers "does the best defence hold?".

    python bench/robustness.py --study studies/quickstart.toml --out bench/data/robustness \\
        --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distdd_nas.artifacts import AppendTable, write_atomic
from distdd_nas.config import StudyConfig, fingerprint, load_config
from distdd_nas.distill import DistilledSet, evaluate_synthetic
from distdd_nas.errors import DistddError
from distdd_nas.seeding import derive_seed
from distdd_nas.stages.on_engine import on_configured_engine
from distdd_nas.study import Study

AGGREGATORS = {
    "mean": '"mean"',
    "centered_clip": '"centered_clip"',
    "median": '"median"',
    "trimmed_mean": '{name="trimmed_mean", trim=0.2}',
}
FAULTS = {
    "clean": (),
    "fail30": ("federation.failure_rate=0.3",),
    **{
        f"byz20-{kind}": ("federation.byzantine_fraction=0.2", f"federation.byzantine_kind={kind}")
        for kind in ("non_finite", "scale", "sign_flip", "noise")
    },
    "noisy30": ("noise.kind=symmetric", "noise.rate=0.5", "noise.client_fraction=0.3"),
}
#: Aggregators of the table, the plain mean first.
ORDER = ("mean", "centered_clip", "median", "trimmed_mean")
#: Measured first, so a partial table answers "does the best defence hold?": the clean and
#: failing baselines, then each attack under the norm-based defence and under the plain mean.
FIRST = (
    ("clean", "mean"),
    ("fail30", "mean"),
    *(
        (f"byz20-{k}", a)
        for k in ("scale", "sign_flip", "noise")
        for a in ("centered_clip", "mean")
    ),
    ("byz20-non_finite", "mean"),
    ("noisy30", "mean"),
    ("clean", "centered_clip"),
)
COLUMNS = (
    "fault",
    "aggregator",
    "algorithm",
    "accuracy",
    "accuracy_std",
    "rejected",
    "skipped",
    "bytes_up",
    "bytes_down",
    "wall_s",
    "fingerprint",
)


def conditions() -> list[tuple[str, str, tuple[str, ...]]]:
    """(fault, aggregator, overrides) in measuring order: :data:`FIRST`, then the rest
    (``fail30`` under the mean only: a dropped client sends nothing to defend against)."""
    cells = [(f, a) for a in ORDER for f in FAULTS if f != "fail30" or a == "mean"]
    ordered = [*FIRST, *(c for c in cells if c not in FIRST)]
    out = []
    for fault, agg in ordered:
        spec = AGGREGATORS[agg]
        extra = (f"distill.aggregator={spec}", f"fedavg.aggregator={spec}")
        out.append((fault, agg, (*FAULTS[fault], *extra)))
    return out


@dataclass(frozen=True)
class Unit:
    """One measurement of a resumable bench: the values of its naming columns (``labels``) and
    the study configuration it runs."""

    labels: Mapping[str, str]
    config: StudyConfig


def run_units(
    units: Sequence[Unit],
    *,
    table: AppendTable,
    threads: int,
    measure: Callable[[Unit], dict[str, float]],
    report: Callable[[Unit, dict[str, float], pd.DataFrame], None],
) -> pd.DataFrame:
    """Measure every unit not in ``table`` yet and append its row (labels, measured values,
    ``fingerprint`` of its configuration and ``threads``) as soon as it is done, then call
    ``report`` with the unit, its values and the whole table. A unit counts as done when a row
    has its fingerprint and labels, so a killed bench re-run continues where it stopped (and a
    changed configuration is measured again). Returns the table."""
    for unit in units:
        fp = fingerprint(unit.config, extra={"threads": threads})
        done = table.read()
        same = done["fingerprint"] == fp
        for column, value in unit.labels.items():
            same &= done[column].astype(str) == value
        if same.any():
            continue
        row = measure(unit)
        table.append(pd.DataFrame([{**unit.labels, **row, "fingerprint": fp}]))
        report(unit, row, table.read())
    return table.read()


def evaluate_set(study: Study, synthetic: DistilledSet) -> tuple[float, float]:
    """DC's evaluation of a distilled set as the distill stage runs it (``distill.eval``
    networks × epochs, the stage's seed): mean and std test accuracy."""
    acc, std, _ = evaluate_synthetic(
        synthetic.images,
        synthetic.labels,
        arch=study.reference,
        test=study.federation.test,
        settings=study.config.distill.eval,
        seed=derive_seed(study.config.study.seed, "eval", "synthetic"),
    )
    return float(acc), float(std)


def run_unit(study: Study, algorithm: str) -> dict[str, float]:
    """One measured cell: accuracy (mean and std over DC's networks for ``distill``), replies
    rejected as non-finite, skipped rounds, bytes and seconds."""
    start = time.perf_counter()
    result, ledger = on_configured_engine(study, algorithm)  # type: ignore[arg-type]
    h = result.history
    if algorithm == "distill":
        acc, std = evaluate_set(study, result.synthetic)
    else:
        acc, std = result.test_accuracy, float("nan")
    return {
        "accuracy": float(acc),
        "accuracy_std": float(std),
        "rejected": float(h["rejected"].sum()),
        "skipped": float(h["skipped"].sum()),
        "bytes_up": float(ledger.bytes_up),
        "bytes_down": float(ledger.bytes_down),
        "wall_s": time.perf_counter() - start,
    }


def render(units: pd.DataFrame) -> str:
    """Accuracy (%) per fault × aggregator, distilled | FedAvg, with the gap to clean mean."""
    lines = [
        "| fault | aggregator | distilled acc. % (± std) | Δ clean | FedAvg acc. % | Δ clean |",
        "|---|---|---|---|---|---|",
    ]
    cell = {(r.fault, r.aggregator, r.algorithm): r for r in units.itertuples()}
    base = {a: cell.get(("clean", "mean", a)) for a in ("distill", "fedavg")}
    for fault in FAULTS:
        for agg in ORDER:
            parts = []
            for algorithm in ("distill", "fedavg"):
                r = cell.get((fault, agg, algorithm))
                if r is None:
                    parts += ["—", "—"]
                    continue
                acc = f"{100 * r.accuracy:.1f}"
                if algorithm == "distill":
                    acc += f" ± {100 * r.accuracy_std:.1f}"
                b = base[algorithm]
                parts += [acc, f"{100 * (r.accuracy - b.accuracy):+.1f}" if b is not None else "—"]
            if any(p != "—" for p in parts):
                lines.append(f"| {fault} | {agg} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def unit_parser(doc: str | None, *, only: str) -> argparse.ArgumentParser:
    """The arguments every resumable unit bench takes: ``--study``, ``--out``, ``--threads``,
    ``--set`` (repeatable overrides) and ``--only`` (described by ``only``)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--only", help=only)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = unit_parser(__doc__, only="run only faults whose name contains this text")
    parser.add_argument(
        "--shard", default="0/1", help="K/N: run every N-th condition from the K-th (workers)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        k, n = (int(x) for x in args.shard.split("/"))
        if not 0 <= k < n:
            raise ValueError
    except ValueError:
        print(
            f"error: --shard {args.shard!r} is not K/N with 0 <= K < N; e.g. 0/2", file=sys.stderr
        )
        return 2
    try:
        todo = [
            (fault, agg, load_config(args.study, [*args.overrides, *extra]))
            for i, (fault, agg, extra) in enumerate(conditions())
            if (args.only is None or args.only in fault) and i % n == k
        ]
    except DistddError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table = AppendTable(args.out / "units.csv", COLUMNS, text=("fingerprint",))
    header = (
        f"<!-- {datetime.date.today()}: python bench/robustness.py "
        f"{shlex.join(sys.argv[1:] if argv is None else argv)} -->\n"
    )
    units = [
        Unit({"fault": fault, "aggregator": agg, "algorithm": algorithm}, config)
        for fault, agg, config in todo
        for algorithm in ("distill", "fedavg")
    ]

    def report(unit: Unit, row: dict[str, float], done: pd.DataFrame) -> None:
        name = unit.labels
        print(
            f"{name['fault']:18s} {name['aggregator']:14s} {name['algorithm']:8s} "
            f"{100 * row['accuracy']:.1f} % ({row['wall_s']:.0f} s)",
            flush=True,
        )
        write_atomic(args.out / "robustness.md", header + render(done))

    done = run_units(
        units,
        table=table,
        threads=args.threads,
        measure=lambda u: run_unit(Study(u.config), u.labels["algorithm"]),
        report=report,
    )
    print(render(done))
    print(f"units: {len(done)}; median seconds per unit: {np.median(done['wall_s']):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
