"""Proxy training recipes, chosen on one half of the ground truth and reported on the other.

The DistDD proxy trains each candidate on the distilled set with one recipe (``search.lr``,
``search.epochs``, ``search.seeds_per_trial``, ...) and ranks candidates by the trained model's
score. Which recipe ranks like FedAvg is an empirical question, and answering it on the same
candidates the answer is reported on would flatter it. This bench takes several runs of
``bench/proxies.py --product-only`` on copies of one ground-truth table, each under another
recipe (``--set search.lr=0.03`` ...), and:

1. splits the candidates into two seeded halves (``distdd_nas.evidence.statistics.halves``,
   seed ``--seed``), picks the recipe with the best Kendall τ on one half and reports that
   recipe on the other half, then swaps: τ and top-1 regret with 90 % bootstrap intervals,
   per held-out half;
2. repeats the selection over ``--splits`` further seeded splits and reports the distribution
   of the held-out τ of whatever was picked (mean and the 5-95 % range over splits), and how
   often each recipe was picked: one split's answer can be luck;
3. lists every recipe on all candidates, as context (tuned on nothing, so each row's τ is an
   in-sample figure of a recipe someone *might* pick; the held-out rows are the claim).

``--best-of LABEL=A,B,...`` adds a per-candidate search over runs already given (each
candidate's best score over them; its cost per candidate is their sum), e.g. a short lr search
per candidate. A run is ``LABEL=DIR``: ``DIR/proxies.csv`` must hold the truth and one DistDD
score column (``distdd_e<epochs>``; name it as ``LABEL=DIR:COLUMN`` if there are several).

    python bench/proxy_recipe.py --out bench/data/proxy_directions/recipes_lr.md \\
        --run "lr 0.01=/tmp/lr0.01" --run "lr 0.03=/tmp/lr0.03" --run "lr 0.1=/tmp/lr0.1"
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distdd_nas.artifacts import write_atomic
from distdd_nas.evidence.statistics import halves, ranking_evidence
from distdd_nas.rank_metrics import kendall_tau
from distdd_nas.report.tables import markdown_table


@dataclass(frozen=True)
class Recipe:
    """One proxy run: its label, per-candidate scores and measured cost per candidate."""

    label: str
    scores: pd.Series  # indexed by candidate_id
    mb_per_candidate: float
    seconds_per_candidate: float


class RunError(ValueError):
    """A ``--run`` that cannot be read (the message names it and the fix)."""


def read_run(spec: str) -> tuple[Recipe, pd.Series]:
    """``LABEL=DIR[:COLUMN]`` → (the recipe, the truth of its candidates).

    Raises:
        RunError: No ``=``, no ``proxies.csv``, no or several ``distdd_e*`` columns, a column
            (the score, its ``_bytes`` and ``_s``, ``truth``, ``candidate_id``) missing, or a
            score that is not a number.
    """
    label, sep, where = spec.partition("=")
    if not sep or not label or not where:
        raise RunError(f"--run {spec!r} is not LABEL=DIR[:COLUMN]; e.g. --run 'lr 0.03=/tmp/a'")
    directory, colon, column = where.rpartition(":")
    if not colon or "/" in column:  # no column named, or the colon is part of the path
        directory, column = where, ""
    path = Path(directory) / "proxies.csv"
    if not path.is_file():
        raise RunError(f"--run {spec!r}: {path} does not exist; run bench/proxies.py on it first")
    frame = pd.read_csv(path)
    found = [
        c for c in frame.columns if c.startswith("distdd_e") and not c.endswith(("_bytes", "_s"))
    ]
    if not column and len(found) != 1:
        raise RunError(
            f"--run {spec!r}: {path} has DistDD columns {found or 'none'}; "
            "name one as LABEL=DIR:COLUMN"
        )
    column = column or found[0]
    needed = ["candidate_id", "truth", column, f"{column}_bytes", f"{column}_s"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise RunError(
            f"--run {spec!r}: {path} has no column {missing[0]!r} (DistDD columns: {found}); "
            "use a proxies.csv that bench/proxies.py wrote"
        )
    frame = frame.set_index("candidate_id")
    if frame[[column, "truth"]].isna().any().any():
        raise RunError(f"--run {spec!r}: {path} has empty {column!r} or truth values; re-run it")
    recipe = Recipe(
        label,
        frame[column].astype(float),
        float(frame[f"{column}_bytes"].mean()) / 1e6,
        float(frame[f"{column}_s"].mean()),
    )
    return recipe, frame["truth"].astype(float)


def best_of(spec: str, recipes: Sequence[Recipe]) -> Recipe:
    """``LABEL=A,B,...`` → a per-candidate lr search: each candidate's best score over the named
    recipes (trained and scored under each, so the cost per candidate is their sum).

    Raises:
        RunError: No ``=``, fewer than two names, or a name no ``--run`` has.
    """
    label, sep, names = spec.partition("=")
    parts = [n.strip() for n in names.split(",") if n.strip()]
    if not sep or not label or len(parts) < 2:
        raise RunError(f"--best-of {spec!r} is not LABEL=RUN,RUN[,...] (two --run labels or more)")
    known = {r.label: r for r in recipes}
    unknown = [n for n in parts if n not in known]
    if unknown:
        raise RunError(
            f"--best-of {spec!r}: no --run is labelled {unknown[0]!r} (labels: {', '.join(known)})"
        )
    chosen = [known[n] for n in parts]
    return Recipe(
        label,
        pd.concat([r.scores for r in chosen], axis=1).max(axis=1),
        sum(r.mb_per_candidate for r in chosen),
        sum(r.seconds_per_candidate for r in chosen),
    )


def pick(recipes: Sequence[Recipe], truth: pd.Series, ids: Sequence[str]) -> Recipe:
    """The recipe with the best Kendall τ on ``ids`` (the first listed among equals; a recipe
    whose τ is undefined there, e.g. constant scores, ranks below every other)."""
    y = truth[ids].to_numpy()
    taus = [round(kendall_tau(r.scores[ids].to_numpy(), y), 12) for r in recipes]
    return recipes[int(np.argmax(np.nan_to_num(taus, nan=-np.inf)))]


def held_out_rows(
    recipes: Sequence[Recipe], truth: pd.Series, *, seed: int, boot: int
) -> list[dict[str, str]]:
    """Each half scored by the recipe picked on the other half (the claim of this bench)."""
    ids = truth.index.to_numpy()
    a, b = halves(len(ids), seed=seed)
    rows = []
    for name, tune_on, report_on in (("A", a, b), ("B", b, a)):
        chosen = pick(recipes, truth, ids[tune_on])
        held = ids[report_on]
        ev = ranking_evidence(
            chosen.scores[held].to_numpy(), truth[held].to_numpy(), seed=seed, boot=boot,
            stream=f"recipe-{name}",
        )  # fmt: skip
        rows.append(
            {
                "picked on half": f"{name} ({len(tune_on)} candidates)",
                "recipe picked": chosen.label,
                "reported on": f"the other {len(held)}",
                "held-out Kendall τ [90 % CI]": ev.tau.format(2),
                "held-out top-1 regret, points [90 % CI]": ev.regret.format(1, scale=100),
            }
        )
    return rows


def repeated_splits(
    recipes: Sequence[Recipe], truth: pd.Series, *, splits: int, seed: int
) -> tuple[np.ndarray, Counter[str]]:
    """Held-out τ of the picked recipe over ``splits`` seeded splits (both directions each)."""
    ids = truth.index.to_numpy()
    taus, picked = [], Counter[str]()
    for s in range(splits):
        a, b = halves(len(ids), seed=seed + 1 + s)
        for tune_on, report_on in ((a, b), (b, a)):
            chosen = pick(recipes, truth, ids[tune_on])
            picked[chosen.label] += 1
            held = ids[report_on]
            taus.append(kendall_tau(chosen.scores[held].to_numpy(), truth[held].to_numpy()))
    return np.asarray(taus), picked


def in_sample_rows(
    recipes: Sequence[Recipe], truth: pd.Series, *, seed: int, boot: int
) -> list[dict[str, str]]:
    """Every recipe on every candidate (context: in-sample, nothing held out)."""
    rows = []
    for r in recipes:
        ev = ranking_evidence(
            r.scores[truth.index].to_numpy(), truth.to_numpy(), seed=seed, boot=boot,
            stream="recipe-all",
        )  # fmt: skip
        rows.append(
            {
                "recipe": r.label,
                "Kendall τ, all candidates [90 % CI]": ev.tau.format(2),
                "top-1 regret (points)": f"{100 * ev.regret.point:.1f}",
                "MB per candidate (measured)": f"{r.mb_per_candidate:.2f}",
                "s per candidate (measured)": f"{r.seconds_per_candidate:.2f}",
            }
        )
    return rows


def report(
    recipes: Sequence[Recipe], truth: pd.Series, *, seed: int, splits: int, boot: int
) -> str:
    """The markdown this bench writes (without its heading and command line)."""
    everything, picked = repeated_splits(recipes, truth, splits=splits, seed=seed)
    taus = everything[~np.isnan(everything)]  # undefined: the pick is constant on the half
    undefined = (
        f" ({len(everything) - len(taus)} undefined, left out)"
        if len(taus) < len(everything)
        else ""
    )
    lo, hi = np.percentile(taus, [5, 95]) if len(taus) else (np.nan, np.nan)
    counts = ", ".join(f"{label} {n}" for label, n in picked.most_common())
    return "\n".join(
        [
            f"{len(truth)} candidates; {len(recipes)} recipes. Held out (halves seed {seed}; "
            "intervals: 90 % bootstrap over the held-out half):",
            "",
            markdown_table(pd.DataFrame(held_out_rows(recipes, truth, seed=seed, boot=boot))),
            "",
            f"Over {splits} more seeded splits (seeds {seed + 1}-{seed + splits}, both "
            f"directions each, {len(everything)} selections{undefined}): held-out τ of the "
            f"picked recipe mean **{np.mean(taus):.2f}**, median {np.median(taus):.2f}, 5-95 % "
            f"of selections [{lo:.2f}, {hi:.2f}] (a spread of overlapping splits, not a "
            f"confidence interval); picked: {counts}.",
            "",
            "Every recipe on all candidates (in-sample context, not a claim):",
            "",
            markdown_table(pd.DataFrame(in_sample_rows(recipes, truth, seed=seed, boot=boot))),
            "",
        ]
    )


def load_recipes(args: argparse.Namespace) -> tuple[list[Recipe], pd.Series]:
    """The ``--run`` and ``--best-of`` recipes and the truth they share.

    Raises:
        RunError: ``--splits`` below 1, a label given twice, a run :func:`read_run` or
            :func:`best_of` rejects, or runs made on different tables.
    """
    labels = [spec.partition("=")[0] for spec in [*args.run, *args.best_of]]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if args.splits < 1 or twice:
        problem = f"--splits {args.splits} < 1" if args.splits < 1 else f"label {twice[0]!r} twice"
        raise RunError(f"{problem}; give each recipe its own label and splits >= 1")
    read = [read_run(spec) for spec in args.run]
    truth = read[0][1]
    for (_, other), spec in zip(read, args.run, strict=True):
        if not other.index.equals(truth.index) or not np.allclose(other, truth):
            raise RunError(
                f"--run {spec!r} has other candidates or truths than {args.run[0]!r}; every "
                "run must be made on a copy of the same table"
            )
    recipes = [recipe for recipe, _ in read]
    return recipes + [best_of(spec, recipes) for spec in args.best_of], truth


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; writes ``--out`` and prints it (exit 2 on a run it cannot read)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR[:COLUMN]")
    parser.add_argument(
        "--best-of",
        action="append",
        default=[],
        metavar="LABEL=RUN,RUN[,...]",
        help="also a per-candidate search over these --run labels (each candidate's best score)",
    )
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reported split")
    parser.add_argument("--splits", type=int, default=200, help="further splits to repeat on")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    try:
        recipes, truth = load_recipes(args)
    except RunError as err:
        print(f"proxy_recipe: error: {err}", file=sys.stderr)
        return 2
    text = "\n".join(
        [
            "# Proxy training recipes, picked on one half and reported on the other",
            "",
            f"`{shlex.join(['python', 'bench/proxy_recipe.py', *argv])}`",
            "",
            report(recipes, truth, seed=args.seed, splits=args.splits, boot=args.boot),
        ]
    )
    write_atomic(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
