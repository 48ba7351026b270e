"""``report.md``: the human report of a study, rendered from its summary and tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from distdd_nas.report.tables import markdown_table, ranking_table, validation_table

#: File names of the figures the report links (the caller saves them beside report.md).
FIGURES = {
    "proxy_vs_fedavg": "proxy_vs_fedavg.png",
    "communication": "communication.png",
    "history": "history.png",
    "grid": "grid.png",
}
REQUIRED_KEYS = (
    "kendall_tau",
    "spearman_rho",
    "top1_regret",
    "n_trials",
    "n_validated",
    "bytes_distdd_total",
    "bytes_fedavg_nas_total",
    "comm_ratio",
    "break_even_candidates",
)


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return format(value, fmt)


def _bytes(value: Any) -> str:
    if value is None:
        return "n/a"
    v = float(value)
    return f"{v / 2**20:,.1f} MiB" if v < 2**30 else f"{v / 2**30:,.2f} GiB"


def _interval(s: Mapping[str, Any]) -> str:
    """The τ interval, labelled for what it is: a bootstrap over the few *selected* candidates
    (top-k and controls), not evidence of ranking quality over the space."""
    lo, hi = s.get("kendall_tau_low"), s.get("kendall_tau_high")
    if lo is None or hi is None:
        return ""
    return (
        f", 90 % bootstrap interval [{_num(lo, '.2f')}, {_num(hi, '.2f')}] over the selected "
        "candidates; ranking quality over the space is the ground truth's (README, Evidence)"
    )


def _cost_section(s: Mapping[str, Any]) -> list[str]:
    """The cost table and the break-even sentence."""
    be = s["break_even_candidates"]
    be_time = s.get("break_even_candidates_time")
    return [
        "## Cost: distil once + search + validate vs FedAvg for every candidate",
        "",
        "| | bytes | wall s |",
        "|---|---|---|",
        f"| distil | {_bytes(s.get('bytes_distill'))} | {_num(s.get('wall_s_distill'), '.0f')} |",
        f"| search (proxy scoring) | {_bytes(s.get('bytes_search'))} | "
        f"{_num(s.get('wall_s_search'), '.0f')} |",
        f"| validate (FedAvg, {s['n_validated']} candidates) | "
        f"{_bytes(s.get('bytes_validate'))} | {_num(s.get('wall_s_validate'), '.0f')} |",
        f"| **DistDD total** | {_bytes(s['bytes_distdd_total'])} | "
        f"{_num(s.get('wall_s_distdd_total'), '.0f')} |",
        f"| FedAvg per distinct candidate, all {s.get('n_candidates', s['n_trials'])} (measured + "
        f"computed) | {_bytes(s['bytes_fedavg_nas_total'])} | "
        f"{_num(s.get('wall_s_fedavg_nas_total'), '.0f')} |",
        f"| ratio FedAvg-NAS / DistDD | {_num(s['comm_ratio'], '.2f')}× | "
        f"{_num(s.get('time_ratio'), '.2f')}× |",
        "",
        "Break-even: DistDD-based search sends fewer bytes from "
        + (
            f"**{be}** candidates on"
            if be is not None
            else "**no** number of candidates "
            "(scoring a candidate costs as much as training it with FedAvg)"
        )
        + (
            f"; it takes less wall time from **{be_time}** candidates on."
            if be_time is not None
            else "."
        ),
        "",
        *(
            [f"What is measured and what is computed: {s['cost_basis']}.", ""]
            if s.get("cost_basis")
            else []
        ),
    ]


def render_markdown(
    summary: Mapping[str, Any],
    *,
    validation: pd.DataFrame,
    ranking: pd.DataFrame | None = None,
    title: str = "distdd-nas report",
    description: str = "",
    figures: Mapping[str, str] = FIGURES,
    top_ranking: int = 10,
) -> str:
    """Markdown of a study: ranking quality, validated candidates, cost, break-even, figures.

    Args:
        summary: From :func:`distdd_nas.report.metrics.study_summary` (plus any extra keys:
            ``distilled_accuracy``, ``random_real_accuracy``, ``storage``, ``study``).
        validation: The validated candidates (proxy score, FedAvg accuracy, selected_as, …).
        ranking: The proxy ranking of all candidates (its top ``top_ranking`` rows are shown).
        title: First heading.
        description: A paragraph under the title.
        figures: Figure key → file name; missing keys are not linked.
        top_ranking: Rows of the ranking to show.

    Raises:
        KeyError: ``summary`` lacks one of :data:`REQUIRED_KEYS`.
    """
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    if missing:
        raise KeyError(f"summary lacks {missing}; build it with report.metrics.study_summary")
    s = summary
    lines = [f"# {title}", ""]
    if description:
        lines += [description, ""]
    lines += [
        "## Ranking quality: proxy on the distilled set vs real FedAvg",
        "",
        f"- trials searched: {s['n_trials']} ({s.get('n_candidates', s['n_trials'])} distinct "
        f"candidates); validated with FedAvg: {s['n_validated']}"
        + (f" (top {s['top_k']} by proxy + random controls)" if "top_k" in s else ""),
        f"- Kendall τ = {_num(s['kendall_tau'])} (n = {s['n_validated']}{_interval(s)}), "
        f"Spearman ρ = {_num(s['spearman_rho'])}, "
        f"top-k overlap = {_num(s.get('topk_overlap'), '.2f')}"
        + (f"; FedAvg accuracy after {s['fedavg_rounds']} rounds" if "fedavg_rounds" in s else ""),
        f"- regret of the proxy's top-1 = {_num(s['top1_regret'], '.4f')} (best validated "
        f"FedAvg accuracy {_num(s.get('best_fedavg_accuracy'), '.4f')}, proxy's top-1 "
        f"{_num(s.get('proxy_top1_fedavg_accuracy'), '.4f')})",
    ]
    if s.get("distilled_accuracy") is not None:
        lines.append(
            f"- distilled set accuracy {_num(s['distilled_accuracy'], '.4f')} "
            f"(random real subset: {_num(s.get('random_real_accuracy'), '.4f')})"
        )
    lines.append("")
    if "proxy_vs_fedavg" in figures:
        lines += [f"![proxy vs FedAvg]({figures['proxy_vs_fedavg']})", ""]
    lines += ["### Validated candidates", "", markdown_table(validation_table(validation)), ""]
    if ranking is not None and len(ranking):
        lines += [
            f"### Proxy ranking (top {min(top_ranking, len(ranking))} of {len(ranking)})",
            "",
            markdown_table(ranking_table(ranking).head(top_ranking)),
            "",
        ]
    lines += _cost_section(s)
    if "bytes_distdd_per_client" in s:
        lines += [
            f"Per client: DistDD {_bytes(s['bytes_distdd_per_client'])}, FedAvg-NAS "
            f"{_bytes(s.get('bytes_fedavg_nas_per_client'))}.",
            "",
        ]
    links = [f"![{k}]({figures[k]})" for k in ("communication", "history", "grid") if k in figures]
    if links:
        lines += [" ".join(links), ""]
    if s.get("storage"):
        lines += [f"Open the search study: `optuna-dashboard {s['storage']}`", ""]
    return "\n".join(lines)


__all__ = ["FIGURES", "REQUIRED_KEYS", "render_markdown"]
