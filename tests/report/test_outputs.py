"""Tables, figures and the Markdown report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from distdd_nas.distill.result import DistilledSet
from distdd_nas.report import (
    communication_cost,
    communication_figure,
    distilled_grid_figure,
    history_figure,
    markdown_table,
    proxy_vs_fedavg_figure,
    render_markdown,
    study_summary,
    trials_table,
    validation_table,
)
from tests.report.test_metrics import trials, validation


def test_validation_table_adds_fedavg_rank() -> None:
    v = validation().assign(proxy_rank=[2, 1], selected_as=["control", "top"])
    table = validation_table(v)
    assert list(table["candidate_id"]) == ["b", "a"]
    assert list(table["fedavg_rank"]) == [1, 2]
    assert list(trials_table(trials())["number"]) == [0, 1, 2, 3, 4]


def test_markdown_table_formats_and_escapes() -> None:
    text = markdown_table(pd.DataFrame({"a": [0.123456, float("nan")], "b": ["x|y", "z"]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 0.1235 | x\\|y |", "|  | z |"]


def test_figures_render_and_save(tmp_path: Path) -> None:
    v = validation().assign(selected_as=["top", "control"], proxy_rank=[1, 2])
    fig = proxy_vs_fedavg_figure(v)
    assert isinstance(fig, Figure)
    assert "Kendall τ = 1.00" in " ".join(t.get_text() for t in fig.axes[0].texts)
    cost = communication_cost(
        trials=trials(),
        validation=validation(),
        rounds=5,
        clients_per_round=3,
        num_clients=4,
        distill_bytes=10**6,
    )
    comm = communication_figure(cost)
    texts = [t.get_text() for t in comm.axes[0].texts]
    # the two totals, labelled
    totals = (cost.distdd_bytes, cost.fedavg_nas_bytes)
    assert texts == [f"{b / 1e6:,.1f} MB" for b in totals]
    assert len(comm.axes[0].patches) == 4  # three stacked DistDD parts + FedAvg-NAS
    heights = [p.get_height() for p in comm.axes[0].patches]
    assert sum(heights[:3]) * 1e6 == pytest.approx(cost.distdd_bytes)
    assert comm.axes[0].get_ylabel() == "bytes sent, up + down (MB)"
    labels = [t.get_text() for t in fig.axes[0].texts[1:]]
    assert sorted(labels) == ["#1", "#2"] and "(%)" in fig.axes[0].get_xlabel()
    hist = history_figure(
        trials().assign(
            value=[0.1, 0.5, 0.3, 0.2, np.nan], reference=[True, False, False, False, False]
        )
    )
    best = hist.axes[0].lines[0].get_ydata()
    assert list(best) == [0.1, 0.5, 0.5, 0.5]
    for name, f in {"a": fig, "b": comm, "c": hist}.items():
        f.savefig(tmp_path / f"{name}.png", dpi=50)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_image_grid_is_denormalised() -> None:
    pixels = torch.rand(6, 1, 4, 4)
    mean, std = 0.3, 0.2
    distilled = DistilledSet(((pixels - mean) / std).float(), torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    fig = distilled_grid_figure(distilled, mean=(mean,), std=(std,), classes=["a", "b", "c"])
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 6
    shown = axes[0].images[0].get_array()
    assert np.allclose(np.asarray(shown), pixels[0, 0].numpy(), atol=1e-6)


def test_render_markdown() -> None:
    v = validation().assign(selected_as=["top", "control"], proxy_rank=[1, 2])
    cost = communication_cost(
        trials=trials(),
        validation=validation(),
        rounds=5,
        clients_per_round=3,
        num_clients=4,
        distill_bytes=10**6,
    )
    summary = study_summary(
        validation=v, cost=cost, n_trials=5, top_k=1, extra={"storage": "sqlite:///x.db"}
    )
    text = render_markdown(
        summary,
        validation=v,
        ranking=v.assign(proxy_score=[0.6, 0.8]),
        title="smoke",
        description="a test",
    )
    assert text.startswith("# smoke\n\na test")
    assert "Kendall τ = 1.000" in text
    be = summary["break_even_candidates"]
    assert be == 78  # floor(1_036_000 / (14000 − 600)) + 1 = floor(77.3) + 1
    assert f"fewer bytes from **{be}** candidates on" in text
    never = render_markdown({**summary, "break_even_candidates": None}, validation=v)
    assert "from **no** number of candidates" in never
    assert "| candidate_id | selected_as | proxy_rank |" in text
    assert "![proxy vs FedAvg](proxy_vs_fedavg.png)" in text
    assert "optuna-dashboard sqlite:///x.db" in text
    with pytest.raises(KeyError, match="comm_ratio"):
        render_markdown({k: val for k, val in summary.items() if k != "comm_ratio"}, validation=v)
