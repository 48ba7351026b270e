"""Search cost at equal quality: DistDD-NAS against FedAvg-based searches, replayed on the pool.

Inputs are measurements only: a ``distdd-nas groundtruth`` table (per-round FedAvg curves with
cumulative bytes and seconds), ``proxies.csv`` from ``bench/proxies.py`` (each candidate's proxy
score and the bytes/seconds its federated scoring cost) and the cached distillation's manifest
(its bytes and seconds). Over ``--repetitions`` seeded sub-pools of ``--size`` candidates it
replays (:mod:`distdd_nas.evidence.search_cost`): random search with full FedAvg, FedAvg with
Optuna's successive-halving and Hyperband pruners on rounds, and DistDD-NAS (score all, train the
proxy's top ``--top-k`` with full FedAvg). Searches observe replicate 1's curves and are judged
by replicate 0 at the final round. Then how each cost grows with the pool size, computed from
the measured per-candidate means (labelled as such). Writes ``TABLE/search_cost.md``.

    python bench/search_cost.py --study studies/quickstart.toml --table bench/data/quickstart \\
        --cache artifacts --proxy distdd_e100
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd

from distdd_nas.artifacts import read_manifest, write_atomic
from distdd_nas.config import load_config
from distdd_nas.errors import ArtifactError, DistddError
from distdd_nas.evidence.search_cost import Pool, compare_searches, summarise
from distdd_nas.report.tables import markdown_table
from distdd_nas.stages.distill import distilled_dir
from distdd_nas.stages.groundtruth import parse_replicates, read_table
from distdd_nas.study import Study

GROWTH = (20, 40, 100, 540)


def load_pool(
    study: Study, table: Path, *, replicates: Sequence[int] | None = None
) -> tuple[Pool, pd.DataFrame, dict[str, str]]:
    """The table's candidates with every replicate in use complete (``replicates``, default
    all; the first judges, the second is observed), as a replay pool keyed by the ids
    this study gives them (a replayed trial names its candidate through the study's factory);
    also the rows and the map table id → study id (they differ when proxy settings differ)."""
    read = read_table(table, replicates=replicates)
    rows = read.candidates
    built = {str(r["candidate_id"]): study.candidates.from_row(r) for _, r in rows.iterrows()}
    to_study = {tid: c.candidate_id for tid, c in built.items()}
    if len(set(to_study.values())) < len(to_study):
        raise ArtifactError(
            f"{table}: this study builds one candidate from several of the table's; replay it "
            "with the settings the table was made with (see groundtruth/plan.json)"
        )
    kept = read.curves[read.curves["candidate_id"].isin(rows["candidate_id"])]
    pool = Pool(
        kept.assign(candidate_id=kept["candidate_id"].map(to_study)),
        {to_study[tid]: c for tid, c in built.items()},
        rounds=read.rounds,
        observe=read.observe,
        truth=read.truth,
    )
    return pool, rows, to_study


def growth(
    summary: pd.DataFrame, *, distill_bytes: float, top_k: int, per: dict[str, float]
) -> pd.DataFrame:
    """Bytes of each method at pool sizes GROWTH, computed from measured per-candidate means."""
    rows = []
    for m in GROWTH:
        rows.append(
            {
                "pool size": m,
                "random search, full FedAvg (all)": m * per["full"],
                "FedAvg + successive halving": m * per["successive_halving"],
                "FedAvg + hyperband": m * per["hyperband"],
                f"DistDD-NAS (top {top_k})": distill_bytes
                + m * per["scoring"]
                + top_k * per["full"],
            }
        )
    return pd.DataFrame(rows)


def run(args: argparse.Namespace, command: str) -> str:
    study = Study(load_config(args.study, args.overrides))
    pool, rows, to_study = load_pool(study, args.table, replicates=args.replicates)
    proxies = pd.read_csv(args.table / "proxies.csv", dtype={"candidate_id": str})
    proxies = proxies.set_index("candidate_id")
    missing = sorted(set(rows["candidate_id"]) - set(proxies.index))
    if missing:
        raise ArtifactError(
            f"{args.table / 'proxies.csv'} lacks {len(missing)} of the table's complete "
            "candidates; re-run bench/proxies.py on the table first"
        )
    proxies = proxies.loc[rows["candidate_id"]].rename(index=to_study)
    manifest = read_manifest(distilled_dir(study, args.cache))
    if manifest is None:  # DistDD-NAS would be priced without its distillation
        raise ArtifactError(
            f"no distilled set of this study in {args.cache}: DistDD-NAS's cost includes its "
            "distillation; pass the --cache bench/proxies.py used on this table (it distils)"
        )
    distill_bytes = float(manifest.get("bytes_up", 0)) + float(manifest.get("bytes_down", 0))
    distdd = {
        "scores": proxies[args.proxy].to_dict(),
        "scoring_bytes": proxies[f"{args.proxy}_bytes"].to_dict(),
        "scoring_seconds": proxies[f"{args.proxy}_s"].to_dict(),
        "top_k": args.top_k,
        "distill_bytes": distill_bytes,
        "distill_seconds": float(manifest.get("wall_s", 0.0)),
    }
    size = min(args.size, len(rows))
    outcomes = compare_searches(
        pool,
        size=size,
        repetitions=args.repetitions,
        seed=args.seed,
        random_budget=min(args.random_budget, size),
        distdd=distdd,
    )
    summary = summarise(outcomes)
    full = pool.final(pool.observe)["bytes"].mean()
    per = {"full": float(full), "scoring": float(proxies[f"{args.proxy}_bytes"].mean())}
    for key in ("successive_halving", "hyperband"):
        row = summary[summary["method"].str.contains(key.replace("_", " "))]
        per[key] = float(row["bytes_mean"].iloc[0]) / size
    grown = growth(summary, distill_bytes=distill_bytes, top_k=args.top_k, per=per)
    shown = summary.assign(
        bytes_MB=summary["bytes_mean"] / 1e6,
        regret_points=summary["regret_mean"] * 100,
        regret_90=[
            f"[{lo * 100:.1f}, {hi * 100:.1f}]"
            for lo, hi in zip(summary["regret_low"], summary["regret_high"], strict=True)
        ],
    )[
        [
            "method",
            "repetitions",
            "pick_accuracy",
            "regret_points",
            "regret_90",
            "found_best",
            "bytes_MB",
            "seconds_mean",
            "trained_mean",
        ]
    ]
    text = "\n".join(
        [
            "# Search cost at equal quality (replayed on the ground-truth pool)",
            "",
            f"`{command}`",
            "",
            f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}. Pool: "
            f"{len(rows)} candidates with complete curves, R = {pool.rounds} rounds; sub-pools of "
            f"{size}, {args.repetitions} repetitions. Searches observe replicate {pool.observe}, "
            f"picks are judged by replicate {pool.truth} at round R. Bytes and seconds: sums of "
            f"measured per-round costs (curves), measured scoring ({args.proxy}) and the measured "
            f"distillation ({distill_bytes / 1e6:,.1f} MB). Seconds were measured on a shared "
            "2-core machine; compare them only with each other. Regret is against the best "
            "candidate of the whole sub-pool for every method (random search sees only its "
            "budget of it)."
            + (
                " One replicate in use: the searches observe the seed they are judged by, which "
                "flatters the FedAvg-based ones (they share its seed luck)."
                if pool.observe == pool.truth
                else ""
            ),
            "",
            markdown_table(shown, floatfmt=".3f"),
            "",
            "## MB sent as the pool grows (computed from the measured per-candidate means above)",
            "",
            markdown_table(
                grown.assign(**{c: grown[c] / 1e6 for c in grown.columns if c != "pool size"}),
                floatfmt=",.1f",
            ),
            "",
        ]
    )
    write_atomic(args.table / "search_cost.md", text + "\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--table", required=True, type=Path)
    parser.add_argument("--cache", type=Path, default=Path("artifacts"))
    parser.add_argument("--proxy", default="distdd_e100", help="a score column of proxies.csv")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="K=V")
    parser.add_argument("--size", type=int, default=20, help="candidates per sub-pool")
    parser.add_argument(
        "--repetitions",
        type=int,
        default=200,
        help="seeded sub-pools (20 swung mean regrets by >1 point)",
    )
    parser.add_argument("--random-budget", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replicates",
        type=parse_replicates,
        help="replicates in use, truth first (e.g. 1: one seed while the second is training)",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    command = shlex.join(["python", "bench/search_cost.py", *(argv or sys.argv[1:])])
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per replayed study
    try:
        print(run(args, command))
    except (DistddError, KeyError) as err:
        print(f"search_cost: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
