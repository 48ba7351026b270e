"""Differential privacy measured on a study: distilled accuracy and the proxy's ranking at ε = ∞,
8 and 1.

One *unit* is one row of the table: a DistDD distillation of the study's set (cached, content-
addressed, resumable per outer iteration under ``--cache``), evaluated with DC's protocol as the
distill stage does (``distill.eval``: networks × epochs on the server test set), then the DistDD
proxy — the search's scoring on that set, ``search.epochs`` — of every candidate of a ground-
truth table with complete curves, against the truth (replicate 0 at the table's final round):
Kendall τ with its 90 % bootstrap interval, Spearman ρ and the regret of the proxy's top-1, by
the same code ``bench/proxies.py`` runs for its "DistDD proxy" row. Rows, in measuring order:

* ``ε = ∞, client_mean``: the study as shipped (no DP; pixel moments for the initialisation);
* ``ε = 8`` and ``ε = 1``: ``distill.init = "noise"``, ``distill.dp_clip = --clip`` and
  ``distill.dp_target_epsilon``: the noise multiplier is calibrated by the accountant so that
  the census and every upload of the run together spend at most ε at ``distill.dp_delta``;
* ``ε = ∞, noise``: the no-noise counterpart of the DP rows (same initialisation, no DP).

Units are appended to ``OUT/units.csv`` as they finish (resumable: a unit whose row is there
with the same configuration fingerprint is not rerun); proxy scores are cached per candidate in
``OUT/proxy_scores.csv`` (keyed by the distilled set); ``OUT/privacy.md`` is the table of what
is done, rewritten after every unit, with the command on top.

    python bench/privacy.py --study studies/quickstart.toml --table bench/data/quickstart \\
        --out bench/data/privacy --cache artifacts --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts
from proxies import ScoreCache, cache_key, distdd_scores, proxy_scorer
from robustness import Unit, evaluate_set, run_units

from distdd_nas.artifacts import AppendTable, read_manifest, write_atomic
from distdd_nas.config import load_config
from distdd_nas.errors import ArtifactError, DistddError
from distdd_nas.evidence.proxies import fedavg_after
from distdd_nas.evidence.statistics import proxy_evidence
from distdd_nas.search.candidate import Candidate
from distdd_nas.stages.distill import ensure_distilled, load_distilled
from distdd_nas.stages.groundtruth import GroundTruthTable, read_table
from distdd_nas.study import Study

#: Naming columns of a row: the target ε ("inf" without DP) and the initialisation.
LABELS = ("epsilon", "init")
COLUMNS = (
    *LABELS,
    "dp_clip",
    "dp_noise_multiplier",
    "dp_census_noise",
    "dp_epsilon",
    "dp_delta",
    "accuracy",
    "accuracy_std",
    "n",
    "tau",
    "tau_low",
    "tau_high",
    "rho",
    "regret",
    "regret_low",
    "regret_high",
    "bytes_up",
    "bytes_down",
    "distill_s",
    "wall_s",
    "fingerprint",
)


def rows(clip: float) -> list[tuple[str, str, tuple[str, ...]]]:
    """(target ε, init, overrides) of every row, in measuring order (see the module doc)."""
    noise = 'distill.init="noise"'
    private = (noise, f"distill.dp_clip={clip}")
    return [
        ("inf", "client_mean", ()),
        ("8", "noise", (*private, "distill.dp_target_epsilon=8")),
        ("1", "noise", (*private, "distill.dp_target_epsilon=1")),
        ("inf", "noise", (noise,)),
    ]


class Ranking:
    """The ground truth a proxy is judged against: the table's candidates with complete curves
    (rebuilt from their parameters) and replicate 0's accuracy at the final round."""

    def __init__(self, study: Study, table: GroundTruthTable, *, boot: int) -> None:
        if len(table.candidates) < 4:
            raise ArtifactError(
                f"only {len(table.candidates)} ground-truth candidates have complete curves; "
                "need at least 4"
            )
        self.ids: list[str] = table.candidates["candidate_id"].tolist()
        self.candidates: list[Candidate] = [
            study.candidates.from_row(row) for _, row in table.candidates.iterrows()
        ]
        self.truth = fedavg_after(
            table.curves, rounds=table.rounds, replicate=0, candidate_ids=self.ids
        )
        self.boot = boot

    def judge(
        self, study: Study, distilled: Path, *, epochs: int, scores: Path
    ) -> dict[str, float]:
        """τ (with its interval), ρ and top-1 regret of the DistDD proxy on ``distilled``
        (scores cached in ``scores``, keyed by the distilled set and proxy settings)."""
        cache = ScoreCache(scores, cache_key(study, distilled, epochs, epochs))
        with proxy_scorer(study, distilled) as (_, scorer):
            got = distdd_scores(scorer, self.candidates, self.ids, epochs=epochs, cache=cache)
        ev = proxy_evidence(
            got.scores, self.truth.scores, seed=study.config.study.seed, boot=self.boot
        ).all
        return {
            "n": float(ev.n),
            "tau": ev.tau.point,
            "tau_low": ev.tau.low,
            "tau_high": ev.tau.high,
            "rho": ev.rho.point,
            "regret": ev.regret.point,
            "regret_low": ev.regret.low,
            "regret_high": ev.regret.high,
        }


def measure(
    unit: Unit, *, cache: Path, ranking: Ranking, epochs: int, out: Path
) -> dict[str, float]:
    """One row: distil (or reuse the cached set), evaluate it, judge its proxy's ranking."""
    start = time.perf_counter()
    study = Study(unit.config)
    path = ensure_distilled(study, cache)
    manifest = read_manifest(path) or {}
    acc, std = evaluate_set(study, load_distilled(path))
    d = study.config.distill
    return {
        "dp_clip": d.dp_clip,
        "dp_noise_multiplier": float(manifest.get("dp_noise_multiplier", 0.0)),
        "dp_census_noise": float(manifest.get("dp_census_noise", 0.0)),
        "dp_epsilon": float(manifest.get("dp_epsilon", math.inf)),
        "dp_delta": d.dp_delta,
        "accuracy": acc,
        "accuracy_std": std,
        **ranking.judge(study, path, epochs=epochs, scores=out / "proxy_scores.csv"),
        "bytes_up": float(manifest.get("bytes_up", math.nan)),
        "bytes_down": float(manifest.get("bytes_down", math.nan)),
        "distill_s": float(manifest.get("wall_s", math.nan)),
        "wall_s": time.perf_counter() - start,
    }


def render(units: pd.DataFrame, *, clip: float) -> str:
    """The table: one line per row in measuring order, "pending" where not measured yet."""
    lines = [
        "| ε (δ = 1e-5) | init | noise multiplier σ | ε by the accountant | distilled acc. % "
        "(± std, 3 nets) | Kendall τ [90 % CI] | Spearman ρ | top-1 regret, points [90 % CI] "
        "| MB up | distil s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for eps, init, _ in rows(clip):
        name = "∞" if eps == "inf" else eps
        done = units[(units["epsilon"].astype(str) == eps) & (units["init"] == init)]
        if done.empty:
            lines.append(f"| {name} | {init} | pending |" + " |" * 7)
            continue
        r = done.iloc[-1]
        sigma = f"{r.dp_noise_multiplier:.2f}" if r.dp_clip > 0 else "—"
        spent = f"{r.dp_epsilon:.2f}" if math.isfinite(r.dp_epsilon) else "∞"
        cells = [
            name,
            init,
            sigma,
            spent,
            f"{100 * r.accuracy:.1f} ± {100 * r.accuracy_std:.1f}",
            f"{r.tau:.2f} [{r.tau_low:.2f}, {r.tau_high:.2f}]",
            f"{r.rho:.2f}",
            f"{100 * r.regret:.1f} [{100 * r.regret_low:.1f}, {100 * r.regret_high:.1f}]",
            f"{r.bytes_up / 1e6:,.0f}",
            f"{r.distill_s:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True, help="a groundtruth --out")
    parser.add_argument("--out", type=Path, default=Path("bench/data/privacy"))
    parser.add_argument("--cache", type=Path, default=Path("artifacts"), help="distilled sets")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--clip", type=float, default=1.0, help="per-example clip norm C")
    parser.add_argument("--epochs", type=int, help="DistDD proxy epochs (default search.epochs)")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--only", help="run only rows whose target ε is this (inf, 8, 1)")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on a user-facing error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        base = Study(load_config(args.study, args.overrides))
        ranking = Ranking(base, read_table(args.table), boot=args.boot)
        units = [
            Unit({"epsilon": eps, "init": init}, load_config(args.study, [*args.overrides, *o]))
            for eps, init, o in rows(args.clip)
            if args.only is None or args.only == eps
        ]
    except DistddError as err:
        print(f"privacy: error: {err}", file=sys.stderr)
        return 2
    epochs = args.epochs or base.config.search.epochs
    args.out.mkdir(parents=True, exist_ok=True)
    table = AppendTable(args.out / "units.csv", COLUMNS, text=(*LABELS, "fingerprint"))
    head = (
        f"<!-- {datetime.date.today()}: {shlex.join(['python', 'bench/privacy.py', *argv])} -->\n"
        f"\nClip C = {args.clip}; DistDD proxy at {epochs} epochs on the {len(ranking.ids)} "
        f"candidates of {args.table} (truth: replicate 0 at the final round); "
        f"{args.boot} bootstrap resamples.\n\n"
    )

    def report(unit: Unit, row: dict[str, float], done: pd.DataFrame) -> None:
        print(
            f"ε={unit.labels['epsilon']:>3s} {unit.labels['init']:12s} "
            f"{100 * row['accuracy']:.1f} % τ={row['tau']:.2f} ({row['wall_s']:.0f} s)",
            flush=True,
        )
        write_atomic(args.out / "privacy.md", head + render(done, clip=args.clip))

    done = run_units(
        units,
        table=table,
        threads=args.threads,
        measure=lambda u: measure(
            u, cache=args.cache, ranking=ranking, epochs=epochs, out=args.out
        ),
        report=report,
    )
    write_atomic(args.out / "privacy.md", head + render(done, clip=args.clip))
    print(render(done, clip=args.clip), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
