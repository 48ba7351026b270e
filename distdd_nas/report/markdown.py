"""``report.md``: the human report of a study, rendered from its summary and tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from distdd_nas.report.tables import for_reading, markdown_table, ranking_table, validation_table
from distdd_nas.report.units import format_bytes, format_percent

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
        f"| distil | {format_bytes(s.get('bytes_distill'))} | "
        f"{_num(s.get('wall_s_distill'), '.0f')} |",
        f"| search (proxy scoring) | {format_bytes(s.get('bytes_search'))} | "
        f"{_num(s.get('wall_s_search'), '.0f')} |",
        f"| validate (FedAvg, {s['n_validated']} candidates) | "
        f"{format_bytes(s.get('bytes_validate'))} | {_num(s.get('wall_s_validate'), '.0f')} |",
        f"| **DistDD total** | {format_bytes(s['bytes_distdd_total'])} | "
        f"{_num(s.get('wall_s_distdd_total'), '.0f')} |",
        f"| FedAvg per distinct candidate, all {s.get('n_candidates', s['n_trials'])} (measured + "
        f"computed) | {format_bytes(s['bytes_fedavg_nas_total'])} | "
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


def _points(value: Any) -> str:
    """A difference of accuracies (fractions) in percentage points, signed."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * float(value):+.2f} points"


def _params(params: Mapping[str, Any]) -> str:
    return (
        ", ".join(
            f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
            for k, v in params.items()
        )
        or "(no searched parameters)"
    )


def _trust(s: Mapping[str, Any]) -> str:
    """One sentence on how far the proxy's ranking can be trusted on this study's evidence."""
    tau, lo, hi, n = (
        s.get("kendall_tau"),
        s.get("kendall_tau_low"),
        s.get("kendall_tau_high"),
        s["n_validated"],
    )
    if tau is None or lo is None or hi is None or not math.isfinite(float(lo)):
        return (
            f"How far to trust the proxy: Kendall τ cannot be estimated from {n} validated "
            "candidates; see the ground truth (README, Evidence)."
        )
    verdict = (
        "not distinguishable from chance"
        if float(lo) <= 0 < float(hi)
        else "better than chance"
        if float(lo) > 0
        else "worse than chance"
    )
    return (
        f"How far to trust the proxy: Kendall τ = {float(tau):.2f} over the {n} validated "
        f"candidates, 90 % interval [{float(lo):.2f}, {float(hi):.2f}]: {verdict} on these; "
        "only a ground truth over many candidates says how it ranks the space (README, Evidence)."
    )


def _answer_section(s: Mapping[str, Any]) -> list[str]:
    """The user's question first: which candidate, with what parameters, how good for real."""
    if "best_candidate_id" not in s:
        return []
    rounds = s.get("fedavg_rounds")
    after = f" after {rounds} FedAvg rounds" if rounds else ""
    lines = [
        "## Answer",
        "",
        f"- **Use candidate `{s['best_candidate_id']}`** ({s.get('best_model', '')}): "
        f"{_params(s.get('best_params', {}))}",
        f"- its real FedAvg test accuracy: **{format_percent(s['best_fedavg_accuracy'], 2)}**"
        + after
        + " (the best of the validated candidates; proxy rank "
        f"{s.get('best_proxy_rank')})",
    ]
    if s.get("reference_candidate_id") == s["best_candidate_id"]:
        lines.append(
            "- this is the study's reference configuration itself (reference accuracy "
            f"{format_percent(s.get('reference_fedavg_accuracy'), 2)}): no searched "
            "candidate beat it in real FedAvg"
        )
    elif "reference_candidate_id" in s:
        lines.append(
            f"- the study's reference configuration (`{s['reference_candidate_id']}`: "
            f"{_params(s.get('reference_params', {}))}) reached "
            f"{format_percent(s['reference_fedavg_accuracy'], 2)}: the search is "
            f"**{_points(s.get('best_minus_reference'))}** against it"
        )
    if s.get("proxy_top1_candidate_id") != s["best_candidate_id"]:
        lines.append(
            f"- the proxy alone would have picked `{s['proxy_top1_candidate_id']}` "
            f"({_params(s.get('proxy_top1_params', {}))}), "
            f"{format_percent(s.get('proxy_top1_fedavg_accuracy'), 2)} in real FedAvg"
        )
    return [*lines, f"- {_trust(s)}", ""]


def _ranking_section(s: Mapping[str, Any]) -> list[str]:
    """How the proxy ranked the validated candidates (τ, ρ, overlap, regret, distilled set)."""
    lines: list[str] = []
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
        f"- regret of the proxy's top-1 = {_points(s['top1_regret'])} (best validated "
        f"FedAvg accuracy {format_percent(s.get('best_fedavg_accuracy'), 2)}, proxy's top-1 "
        f"{format_percent(s.get('proxy_top1_fedavg_accuracy'), 2)})",
    ]
    if s.get("distilled_accuracy") is not None:
        lines.append(
            f"- distilled set accuracy {format_percent(s['distilled_accuracy'])} "
            f"(random real subset of the same size: "
            f"{format_percent(s.get('random_real_accuracy'))})"
        )
    return lines


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
    lines += _answer_section(s)
    lines += _ranking_section(s)
    lines.append("")
    if "proxy_vs_fedavg" in figures:
        lines += [f"![proxy vs FedAvg]({figures['proxy_vs_fedavg']})", ""]
    lines += [
        "### Validated candidates",
        "",
        markdown_table(for_reading(validation_table(validation)), floatfmt=".4g"),
        "",
    ]
    if ranking is not None and len(ranking):
        lines += [
            f"### Proxy ranking (top {min(top_ranking, len(ranking))} of {len(ranking)})",
            "",
            markdown_table(for_reading(ranking_table(ranking).head(top_ranking)), floatfmt=".4g"),
            "",
        ]
    lines += _cost_section(s)
    if "bytes_distdd_per_client" in s:
        lines += [
            f"Per client: DistDD {format_bytes(s['bytes_distdd_per_client'])}, FedAvg-NAS "
            f"{format_bytes(s.get('bytes_fedavg_nas_per_client'))}.",
            "",
        ]
    links = [f"![{k}]({figures[k]})" for k in ("communication", "history", "grid") if k in figures]
    if links:
        lines += [" ".join(links), ""]
    if s.get("storage"):
        lines += [
            f"Open the search study (trials, and the validated candidates' real FedAvg accuracy "
            f"in study `{s.get('validation_study', 'n/a')}`): `optuna-dashboard {s['storage']}`",
            "",
        ]
    return "\n".join(lines)


__all__ = ["FIGURES", "REQUIRED_KEYS", "render_markdown"]
