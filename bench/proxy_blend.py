"""Multi-fidelity proxies, tuned on one half of the ground truth and reported on the other.

Reads ``TABLE/proxies.csv`` (``bench/proxies.py``: every candidate's truth and each proxy's
score, bytes and seconds) and blends a cheap proxy with FedAvg after a few rounds by ranks:
``score = w · rank(cheap) + (1 − w) · rank(FedAvg after r rounds)``. The weight ``w`` is chosen
on a seeded half of the candidates (best Kendall τ against the truth over a grid of weights) and
the blend is reported on the other half, then the halves swap: no candidate is both tuned on and
reported on. Each row gives the held-out τ with its 90 % bootstrap interval, the regret of the
held-out top-1 and the bytes per candidate (the cheap proxy's plus r FedAvg rounds), next to
the two parts alone on the same held-out halves.

    python bench/proxy_blend.py --table bench/data/quickstart --cheap distdd_e100 --rounds 1 2
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from distdd_nas.artifacts import write_atomic
from distdd_nas.evidence.statistics import halves, ranking_evidence
from distdd_nas.rank_metrics import kendall_tau
from distdd_nas.report.tables import markdown_table

WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)


def blend(cheap: np.ndarray, fedavg: np.ndarray, w: float) -> np.ndarray:
    """Rank blend: w · rank(cheap) + (1 − w) · rank(fedavg) (average ranks for ties)."""
    return w * rankdata(cheap) + (1 - w) * rankdata(fedavg)


def tune(cheap: np.ndarray, fedavg: np.ndarray, truth: np.ndarray) -> float:
    """The grid weight with the best Kendall τ against ``truth`` (the smallest on ties: the
    most weight on FedAvg among equals)."""
    taus = [round(kendall_tau(blend(cheap, fedavg, w), truth), 12) for w in WEIGHTS]
    return float(WEIGHTS[int(np.nanargmax(taus))])


def held_out(
    frame: pd.DataFrame, cheap: str, rounds: int, *, seed: int, boot: int
) -> list[dict[str, object]]:
    """Rows for the blend and its two parts, each judged on the held-out halves only."""
    truth = frame["truth"].to_numpy(float)
    a, b = halves(len(frame), seed=seed)
    parts = {
        "cheap": frame[cheap].to_numpy(float),
        "fed": frame[f"fedavg_r{rounds}"].to_numpy(float),
    }
    scores = {"blend": np.empty(len(frame)), "cheap": parts["cheap"], "fed": parts["fed"]}
    weights = []
    for tune_on, report_on in ((a, b), (b, a)):
        w = tune(parts["cheap"][tune_on], parts["fed"][tune_on], truth[tune_on])
        weights.append(w)
        # a blend's ranks are within the half it ranks: score each half on its own
        scores["blend"][report_on] = blend(parts["cheap"][report_on], parts["fed"][report_on], w)
    per = {"cheap": frame[f"{cheap}_bytes"].mean(), "fed": frame[f"fedavg_r{rounds}_bytes"].mean()}
    labels = {
        "blend": f"blend of {cheap} and FedAvg after {rounds} round(s), w tuned on the other "
        f"half (w = {weights[0]:.1f} / {weights[1]:.1f})",
        "cheap": f"{cheap} alone",
        "fed": f"FedAvg after {rounds} round(s) alone",
    }
    rows = []
    for key in ("blend", "cheap", "fed"):
        taus, regrets = [], []
        for half in (b, a):  # each half scored by the weight tuned on the other
            ev = ranking_evidence(scores[key][half], truth[half], seed=seed, boot=boot, stream=key)
            taus.append(ev.tau)
            regrets.append(ev.regret.point)
        nbytes = per["cheap"] + per["fed"] if key == "blend" else per[key]
        rows.append(
            {
                "proxy": labels[key],
                "n per half": f"{len(b)} / {len(a)}",
                "held-out Kendall τ [90 % CI], each half": " ; ".join(t.format(2) for t in taus),
                "top-1 regret (points), each half": " ; ".join(f"{100 * r:.1f}" for r in regrets),
                "MB per candidate": f"{nbytes / 1e6:,.1f}",
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; writes ``TABLE/proxy_blend.md`` and prints it (exit 2 on a bad column)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--table", required=True, type=Path)
    parser.add_argument("--cheap", default="distdd_e100", help="a score column of proxies.csv")
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args(argv)
    frame = pd.read_csv(args.table / "proxies.csv")
    wanted = [args.cheap, *(f"fedavg_r{r}" for r in args.rounds)]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        print(
            f"proxy_blend: error: {args.table / 'proxies.csv'} has no column {missing[0]!r}; "
            "run bench/proxies.py on the table (FedAvg rounds it has: fedavg_r1, _r2, _r4, _r8)",
            file=sys.stderr,
        )
        return 2
    rows = [
        row
        for r in args.rounds
        for row in held_out(frame, args.cheap, r, seed=args.seed, boot=args.boot)
    ]
    table = pd.DataFrame(rows).drop_duplicates(subset="proxy")
    text = "\n".join(
        [
            "# Multi-fidelity blends, tuned on one half and reported on the other",
            "",
            f"`{shlex.join(['python', 'bench/proxy_blend.py', *argv])}`",
            "",
            f"{len(frame)} candidates of {args.table}, split into two seeded halves (seed "
            f"{args.seed}); intervals: 90 % bootstrap over each half's candidates. MB per "
            "candidate: the cheap proxy's measured scoring plus r FedAvg rounds (the table's "
            "ledger); a distillation, paid once per search, is not in it.",
            "",
            markdown_table(table),
            "",
        ]
    )
    write_atomic(args.table / "proxy_blend.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
