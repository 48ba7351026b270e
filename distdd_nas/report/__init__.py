"""Report: rank-correlation and cost metrics, tables, figures and the Markdown report."""

from distdd_nas.report.markdown import render_markdown
from distdd_nas.report.metrics import (
    CostComparison,
    communication_cost,
    kendall_tau,
    ranking_metrics,
    spearman_rho,
    study_summary,
    top1_regret,
    topk_overlap,
)
from distdd_nas.report.plots import (
    communication_figure,
    distilled_grid_figure,
    history_figure,
    image_grid_figure,
    proxy_vs_fedavg_figure,
)
from distdd_nas.report.tables import markdown_table, ranking_table, trials_table, validation_table

__all__ = [
    "CostComparison",
    "communication_cost",
    "communication_figure",
    "distilled_grid_figure",
    "history_figure",
    "image_grid_figure",
    "kendall_tau",
    "markdown_table",
    "proxy_vs_fedavg_figure",
    "ranking_metrics",
    "ranking_table",
    "render_markdown",
    "spearman_rho",
    "study_summary",
    "top1_regret",
    "topk_overlap",
    "trials_table",
    "validation_table",
]
