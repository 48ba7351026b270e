"""Distillation bytes measured: each upload/download option alone and combined, on a study.

One *unit* is (option, distillation seed): a DistDD distillation of the study (its ``[distill]``
section plus the option's ``--set`` overrides, the distillation's root seed set to ``seed`` —
data, partition and evaluation networks stay those of ``study.seed``), evaluated as the distill
stage evaluates it (``distill.eval``: networks × epochs), with the bytes up and down of the
whole distillation (census included) from the engine's ledger. The options:

* ``float16``: the study as it is (the quickstart uploads float16: the baseline);
* ``int8`` / ``int4`` / ``int2``: stochastic rounding to 8/4/2-bit integers with per-row
  float16 scales (``distill.grad_dtype``);
* ``topk10`` / ``topk3``: 10 % / 3 % largest-magnitude entries of each tensor with error
  feedback (``distill.grad_topk``), float16 values;
* ``seed``: each iteration's fresh network goes down as its seed (``distill.seed_broadcast``);
* ``fraction50`` / ``fraction40``: 5 / 4 of the 10 clients per step (``distill.fraction``;
  the committed table, made before that setting existed, set ``federation.fraction``, which
  the distillation used then: the same synthetic bytes, as a test checks);
* combinations of these (``+`` in the name).

Units are appended to ``OUT/units.csv`` as they finish (resumable through
:func:`bench.robustness.run_units`: a unit whose row is there with the same configuration
fingerprint is not rerun); ``OUT/upload_bytes.md`` is the table of what is done, rewritten
after every unit, with ratios against ``float16`` of the same seeds. Order: the decisive units
first (baseline, int8, top-k, the combination on seed 0, then seed 1, then the
combination's parts).

    python bench/upload_bytes.py --study studies/quickstart.toml --out bench/data/upload_bytes \\
        --threads 1
"""

from __future__ import annotations

import datetime
import shlex
import sys
import time
from collections.abc import Sequence

import pandas as pd
import torch
from robustness import (  # bench/robustness.py (script dir)
    Unit,
    evaluate_set,
    run_units,
    unit_parser,
)

from distdd_nas.artifacts import AppendTable, write_atomic
from distdd_nas.config import load_config
from distdd_nas.errors import DistddError
from distdd_nas.stages.on_engine import distill_on
from distdd_nas.study import Study

#: Option name → ``--set`` overrides (a ``+`` joins options: their overrides together).
PARTS: dict[str, tuple[str, ...]] = {
    "float16": (),
    "int8": ('distill.grad_dtype="int8"',),
    "int4": ('distill.grad_dtype="int4"',),
    "int2": ('distill.grad_dtype="int2"',),
    "topk10": ("distill.grad_topk=0.1",),
    "topk3": ("distill.grad_topk=0.03",),
    "seed": ("distill.seed_broadcast=true",),
    "fraction50": ("distill.fraction=0.5",),
    "fraction40": ("distill.fraction=0.4",),
}
#: (option, distillation seed) in measuring order: what decides the target first.
ORDER: tuple[tuple[str, int], ...] = (
    ("float16", 0),
    ("int8", 0),
    ("topk10", 0),
    ("int4+fraction40+seed", 0),
    ("float16", 1),
    ("int4+fraction40+seed", 1),
    ("int4", 0),
    ("fraction40", 0),
    ("int4", 1),
    ("fraction40", 1),
    ("int8", 1),
    ("int2", 0),
    ("int2", 1),
    ("int2+fraction50+seed", 0),
    ("int2+fraction50+seed", 1),
    ("fraction50", 0),
    ("int4+fraction50", 0),
    ("topk10", 1),
    ("topk10+int8", 0),
    ("topk3", 0),
    ("seed", 0),
)
COLUMNS = (
    "option",
    "seed",
    "accuracy",
    "accuracy_std",
    "bytes_up",
    "bytes_down",
    "wall_s",
    "fingerprint",
)


def overrides(option: str) -> tuple[str, ...]:
    """The ``--set`` overrides of an option name such as ``int4+fraction50+seed``."""
    return tuple(o for part in option.split("+") for o in PARTS[part])


def measure(unit: Unit) -> dict[str, float]:
    """Distil with the unit's configuration and seed, evaluate, read the ledger."""
    study = Study(unit.config)
    start = time.perf_counter()
    engine = study.make_engine()
    try:
        result = distill_on(study, engine, seed=int(unit.labels["seed"]))
    finally:
        engine.close()
    acc, std = evaluate_set(study, result.synthetic)
    return {
        "accuracy": acc,
        "accuracy_std": std,
        "bytes_up": float(engine.ledger.bytes_up),
        "bytes_down": float(engine.ledger.bytes_down),
        "wall_s": time.perf_counter() - start,
    }


def render(units: pd.DataFrame) -> str:
    """One row per option: MB up/down and their ratios to ``float16`` (same seeds), accuracy
    per seed (mean ± std over the evaluation networks) and its mean change against ``float16``
    over the seeds both have."""
    lines = [
        "| option | up MB | up ÷ float16 | down MB | down ÷ float16 | accuracy % by seed "
        "| Δ acc. vs float16 (seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = units[units["option"] == "float16"].set_index("seed")
    for option in dict.fromkeys(o for o, _ in ORDER):
        rows = units[units["option"] == option].set_index("seed").sort_index()
        if rows.empty:
            continue
        both = rows.index.intersection(base.index)
        up, down = rows["bytes_up"].mean(), rows["bytes_down"].mean()
        ratio_up = base.loc[both, "bytes_up"].mean() / rows.loc[both, "bytes_up"].mean()
        ratio_down = base.loc[both, "bytes_down"].mean() / rows.loc[both, "bytes_down"].mean()
        accs = ", ".join(
            f"{s}: {100 * r.accuracy:.1f} ± {100 * r.accuracy_std:.1f}" for s, r in rows.iterrows()
        )
        delta = 100 * (rows.loc[both, "accuracy"] - base.loc[both, "accuracy"]).mean()
        shown = f"{delta:+.1f} ({len(both)})" if len(both) else "—"
        ratios = [f"{r:.2f}×" if len(both) else "—" for r in (ratio_up, ratio_down)]
        lines.append(
            f"| {option} | {up / 1e6:,.1f} | {ratios[0]} | {down / 1e6:,.1f} | {ratios[1]} "
            f"| {accs} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = unit_parser(__doc__, only="run only options whose name equals this text")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        units = [
            Unit(
                {"option": option, "seed": str(seed)},
                load_config(args.study, [*args.overrides, *overrides(option)]),
            )
            for option, seed in ORDER
            if args.only is None or args.only == option
        ]
    except DistddError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table = AppendTable(args.out / "units.csv", COLUMNS, text=("option", "fingerprint"))
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    header = f"<!-- {datetime.date.today()}: python bench/upload_bytes.py {command} -->\n"

    def report(unit: Unit, row: dict[str, float], done: pd.DataFrame) -> None:
        print(
            f"{unit.labels['option']:24s} seed {unit.labels['seed']} "
            f"{100 * row['accuracy']:.1f} % {row['bytes_up'] / 1e6:,.1f} MB up "
            f"({row['wall_s']:.0f} s)",
            flush=True,
        )
        write_atomic(args.out / "upload_bytes.md", header + render(done))

    done = run_units(units, table=table, threads=args.threads, measure=measure, report=report)
    print(render(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
