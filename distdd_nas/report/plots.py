"""Figures of a study as matplotlib :class:`~matplotlib.figure.Figure` objects (Agg canvas).

Figures are built directly on an Agg canvas — never through ``pyplot`` — so library code touches
no global figure manager and needs no display; the caller saves them
(``fig.savefig(path, dpi=100, bbox_inches="tight")``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from distdd_nas.distill.result import DistilledSet
from distdd_nas.report.metrics import CostComparison, kendall_tau, spearman_rho
from distdd_nas.report.units import format_bytes

_ROLES = (("top", "o", "C0"), ("control", "s", "C1"), ("reference", "*", "C2"))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def image_grid_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[str],
    max_per_class: int = 10,
) -> Figure:
    """One row per class, up to ``max_per_class`` images each, de-normalised to [0, 1]."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    x = (images.detach() * s + m).clamp(0, 1)
    y = labels.numpy()
    num_classes = len(classes)
    cols = min(max_per_class, max(int(np.bincount(y, minlength=num_classes).max()), 1))
    fig = _figure(cols * 0.9 + 1.2, num_classes * 0.9 + 0.4)
    axes = fig.subplots(num_classes, cols, squeeze=False)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)[:cols]
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(idx):
                img = x[idx[j]].permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[c][0].set_ylabel(
            str(classes[c])[:10], rotation=0, ha="right", va="center", fontsize=7
        )
    fig.suptitle("distilled images (one row per class)", fontsize=9)
    return fig


def distilled_grid_figure(
    distilled: DistilledSet,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[str] | None = None,
    max_per_class: int = 10,
) -> Figure:
    """:func:`image_grid_figure` of a :class:`DistilledSet` (class names default to 0..C-1)."""
    names = (
        list(classes) if classes is not None else [str(c) for c in range(distilled.num_classes)]
    )
    return image_grid_figure(
        distilled.images,
        distilled.labels,
        mean=mean,
        std=std,
        classes=names,
        max_per_class=max_per_class,
    )


def scatter_figure(frame: pd.DataFrame, *, x: str, y: str, title: str) -> Figure:
    """One point per validated candidate, marked by ``selected_as`` (top / control)."""
    fig = _figure(5, 4)
    ax = fig.subplots()
    if "selected_as" in frame:
        for role, marker, color in _ROLES:
            part = frame[frame["selected_as"] == role]
            if len(part):
                ax.scatter(part[x], part[y], marker=marker, color=color, label=role, alpha=0.8)
        ax.legend(fontsize=7)
    else:
        ax.scatter(frame[x], frame[y], alpha=0.8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def proxy_vs_fedavg_figure(
    validation: pd.DataFrame,
    *,
    x: str = "proxy_score",
    y: str = "fedavg_accuracy",
    tau: float | None = None,
    rounds: int | None = None,
) -> Figure:
    """Proxy score vs real FedAvg accuracy, both in %, one labelled point per validated
    candidate (its proxy rank; ``ref`` for the study's reference), annotated with Kendall τ
    and Spearman ρ over these points."""
    t = kendall_tau(validation[x], validation[y]) if tau is None else tau
    rho = spearman_rho(validation[x], validation[y])
    shown = validation.assign(**{x: 100 * validation[x], y: 100 * validation[y]})
    fig = scatter_figure(
        shown,
        x=x,
        y=y,
        title=f"proxy score vs real FedAvg accuracy ({len(validation)} validated candidates)",
    )
    ax = fig.axes[0]
    ax.set_xlabel("proxy score: accuracy after training on the distilled set (%)")
    ax.set_ylabel("real FedAvg test accuracy (%)" + (f" after {rounds} rounds" if rounds else ""))
    ax.text(
        0.02,
        0.98,
        f"Kendall τ = {t:.2f}\nSpearman ρ = {rho:.2f}\nn = {len(validation)}",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8},
    )
    for _, row in shown.iterrows():
        rank = f"#{int(row['proxy_rank'])}" if "proxy_rank" in row else str(row["candidate_id"])
        label = f"ref {rank}" if bool(row.get("reference", False)) else rank
        ax.annotate(label, (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    return fig


def communication_figure(cost: CostComparison) -> Figure:
    """Total bytes of the two ways to search: DistDD (distil + proxy scoring + validation,
    stacked) against FedAvg for every distinct candidate, each bar labelled in MB."""
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    bottom = 0.0
    for i, (part, nbytes) in enumerate(
        (
            ("distil", cost.distill_bytes),
            ("proxy scoring", cost.search_bytes),
            ("validation", cost.validate_bytes),
        )
    ):
        ax.bar(["DistDD search"], [nbytes / 1e6], bottom=[bottom], color=f"C{i}", label=part)
        bottom += nbytes / 1e6
    ax.bar(
        [f"FedAvg per candidate\n({cost.n_candidates} candidates)"],
        [cost.fedavg_nas_bytes / 1e6],
        color="C3",
        label="FedAvg for every candidate",
    )
    for i, total in enumerate((cost.distdd_bytes, cost.fedavg_nas_bytes)):
        ax.text(i, total / 1e6, format_bytes(total), ha="center", va="bottom", fontsize=8)
    ratio = "∞" if math.isinf(cost.comm_ratio) else f"{cost.comm_ratio:.2f}×"
    ax.set_ylabel("bytes sent, up + down (MB)")
    ax.set_title(f"total bytes: FedAvg-based / DistDD-based search = {ratio}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return fig


def history_figure(trials: pd.DataFrame, *, value: str = "value") -> Figure:
    """Optimisation history: each completed trial's proxy score and the best so far."""
    fig = _figure(5, 3.5)
    ax = fig.subplots()
    done = trials.dropna(subset=[value]).sort_values("number")
    if "state" in done:
        done = done[done["state"] == "COMPLETE"]
    ax.scatter(done["number"], done[value], s=12, label="trial", alpha=0.7)
    ax.plot(done["number"], done[value].cummax(), color="C1", label="best so far")
    if "reference" in done and done["reference"].astype(bool).any():
        ref = done[done["reference"].astype(bool)]
        ax.scatter(ref["number"], ref[value], marker="*", s=80, color="C2", label="reference")
    ax.set_xlabel("trial")
    ax.set_ylabel("proxy score")
    ax.set_title("optimisation history", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


__all__ = [
    "communication_figure",
    "distilled_grid_figure",
    "history_figure",
    "image_grid_figure",
    "proxy_vs_fedavg_figure",
    "scatter_figure",
]
