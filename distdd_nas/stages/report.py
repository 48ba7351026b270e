"""Stage ``report``: ``report.md``, ``summary.json``, tables and figures, all from
:mod:`distdd_nas.report` (the one report path) fed with the finished stages' files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from distdd_nas.artifacts import is_complete, load_json, read_manifest, stage, verify
from distdd_nas.config import fingerprint
from distdd_nas.errors import ArtifactError
from distdd_nas.federation.engine import round_half_up
from distdd_nas.report import (
    communication_cost,
    communication_figure,
    distilled_grid_figure,
    history_figure,
    proxy_vs_fedavg_figure,
    render_markdown,
    study_summary,
)
from distdd_nas.report.answer import study_answer
from distdd_nas.stages.common import StageOutcome
from distdd_nas.stages.distill import distilled_dir, load_distilled
from distdd_nas.stages.validate import read_trials
from distdd_nas.study import Study


def run_report_stage(study: Study, out: Path, *, cache: Path) -> StageOutcome:
    """Summarise search and validation (ranking quality, cost) and render the report."""
    config = study.config
    for name in ("search", "validate"):
        if not is_complete(out / name):
            raise ArtifactError(f"{out / name} is not complete; run 'distdd-nas {name}' first")
    cached = distilled_dir(study, cache)
    distill = load_json(out / "distill" / "summary.json") if is_complete(out / "distill") else {}
    verify(out / "validate")
    trials = read_trials(out, config)  # verified, and made under this study's search settings
    validation = pd.read_csv(out / "validate" / "validation.csv")
    ranking = pd.read_csv(out / "validate" / "ranking.csv")
    search = load_json(out / "search" / "summary.json")
    num_clients = study.federation.num_clients
    rounds = int(validation["rounds"].iloc[0])  # what validation trained: the one R of the report
    cost = communication_cost(
        trials=trials,
        validation=validation,
        rounds=rounds,
        clients_per_round=max(1, round_half_up(config.federation.fraction * num_clients)),
        num_clients=num_clients,
        distill_ledger=pd.read_csv(cached / "comm.csv"),
        distill_s=float((read_manifest(cached) or {}).get("wall_s", 0.0)),
        validation_ledger=pd.read_csv(out / "validate" / "ledger.csv"),
    )
    validated = load_json(out / "validate" / "summary.json")
    extra: dict[str, Any] = {
        "study": config.study.name,
        "fedavg_rounds": rounds,
        "kendall_tau_low": validated.get("kendall_tau_low"),
        "kendall_tau_high": validated.get("kendall_tau_high"),
        "cost_basis": (
            f"measured: distillation, proxy scoring and validation bytes (ledgers) and seconds; "
            f"FedAvg-NAS: each distinct candidate trained for {rounds} rounds (the validation's "
            "rounds), measured for the validated candidates and computed for the others from "
            "their parameter count times the measured bytes per parameter and round; the final "
            "training of the chosen model is on both sides"
        ),
        "distilled_accuracy": distill.get("test_accuracy_mean"),
        "random_real_accuracy": distill.get("random_real_accuracy_mean"),
        "storage": search.get("storage"),
        "validation_study": validated.get("validation_study"),
        **study_answer(validation),
    }
    summary = study_summary(
        validation=validation,
        cost=cost,
        n_trials=int(trials["state"].isin(["COMPLETE", "PRUNED"]).sum()),
        top_k=config.validate_.top_k,
        extra=extra,
    )
    like = study.federation.train
    figures = {
        "proxy_vs_fedavg.png": proxy_vs_fedavg_figure(validation, rounds=rounds),
        "communication.png": communication_figure(cost),
        "history.png": history_figure(trials),
        "grid.png": distilled_grid_figure(
            load_distilled(cached), mean=like.mean, std=like.std, classes=like.classes
        ),
    }
    with stage(out / "report", fingerprint=fingerprint(config, extra=summary)) as w:
        w.json("summary.json", summary)
        w.csv("trials.csv", trials)
        w.csv("ranking.csv", ranking)
        w.csv("validation.csv", validation)
        for name, fig in figures.items():
            fig.savefig(w.file(name), dpi=100, bbox_inches="tight")
        w.file("report.md").write_text(
            render_markdown(
                summary,
                validation=validation,
                ranking=ranking,
                title=f"distdd-nas report: {config.study.name}",
                description=config.study.description,
            ),
            encoding="utf-8",
        )
    return StageOutcome(out / "report", summary)
