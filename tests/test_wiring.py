"""The real ``run`` on the smoke study is wired as documented: one federation per process, and
the report the CLI writes is exactly :mod:`distdd_nas.report` applied to the stages' files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import distdd_nas.study as study_module
from distdd_nas.artifacts import strict
from distdd_nas.config import StudyConfig
from distdd_nas.pipeline import run_all
from distdd_nas.report import communication_cost, render_markdown, study_summary
from distdd_nas.report.answer import study_answer
from distdd_nas.study import Study
from tests.conftest import smoke

pytestmark = pytest.mark.timeout(300)

FAST = (
    "distill.iterations=2",
    "distill.eval.epochs=10",
    "distill.eval.num_models=1",
    "search.epochs=5",
    "search.n_trials=6",
    "fedavg.rounds=2",
    "fedavg.local_epochs=1",
    "validate.top_k=2",
    "validate.n_random=1",
)


def test_run_builds_the_federation_once_and_reports_through_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[StudyConfig] = []
    real = study_module.build_federation

    def counting(config: StudyConfig) -> study_module.Federation:
        built.append(config)
        return real(config)

    monkeypatch.setattr(study_module, "build_federation", counting)
    out, cache = tmp_path / "run", tmp_path / "cache"
    study = Study(smoke(*FAST))
    run_all(study, out, cache=cache)
    assert len(built) == 1  # distil, evaluate, search, validate and report share it

    # The report equals the library's functions applied, independently, to the stage files.
    trials = pd.read_csv(out / "search" / "trials.csv")
    validation = pd.read_csv(out / "validate" / "validation.csv")
    distilled = next(p for p in (cache / "distilled").iterdir() if p.is_dir())
    cost = communication_cost(
        trials=trials,
        validation=validation,
        rounds=2,
        clients_per_round=4,
        num_clients=4,
        distill_ledger=pd.read_csv(distilled / "comm.csv"),
        distill_s=json.loads((distilled / "manifest.json").read_text())["wall_s"],
        validation_ledger=pd.read_csv(out / "validate" / "ledger.csv"),
    )
    written = json.loads((out / "report" / "summary.json").read_text())
    expected = study_summary(
        validation=validation,
        cost=cost,
        n_trials=int(trials["state"].isin(["COMPLETE", "PRUNED"]).sum()),
        top_k=2,
        extra={
            k: written[k]
            for k in (
                "study",
                "distilled_accuracy",
                "random_real_accuracy",
                "storage",
                "fedavg_rounds",
                "kendall_tau_low",
                "kendall_tau_high",
                "cost_basis",
                "validation_study",
            )
        }
        | study_answer(validation),
    )
    assert json.loads(json.dumps(strict(expected))) == written
    text = render_markdown(
        written,
        validation=validation,
        ranking=pd.read_csv(out / "validate" / "ranking.csv"),
        title="distdd-nas report: smoke",
        description=study.config.study.description,
    )
    assert (out / "report" / "report.md").read_text() == text

    # One number of rounds: the FedAvg side is priced at the rounds validation trained, and a
    # validated candidate's FedAvg cost is exactly what its ledger measured.
    assert written["fedavg_rounds"] == 2 == int(validation["rounds"].iloc[0])
    assert "trained for 2 rounds" in written["cost_basis"]
    # By hand: measured bytes for validated candidates; for the others d × R × clients × 2
    # messages × the bytes per parameter and message the validation ledger shows.
    ledger = pd.read_csv(out / "validate" / "ledger.csv")
    sizes = validation.set_index("candidate_id")["num_parameters"]
    per_param = ledger["bytes"].sum() / sum(
        sizes[cid] * len(rows) for cid, rows in ledger.groupby("candidate_id")
    )
    distinct = trials[trials["state"].isin(["COMPLETE", "PRUNED"])].drop_duplicates("candidate_id")
    by_hand = 0.0
    for _, row in distinct.iterrows():
        if row["candidate_id"] in sizes.index:
            v = validation[validation["candidate_id"] == row["candidate_id"]].iloc[0]
            by_hand += float(v["bytes_up"] + v["bytes_down"])
        else:
            by_hand += per_param * row["num_parameters"] * 2 * 4 * 2  # R=2, 4 clients, up+down
    assert written["bytes_fedavg_nas_total"] == pytest.approx(by_hand, rel=1e-9)
    assert written["kendall_tau_low"] <= written["kendall_tau_high"]  # percentile bounds
    assert f"n = {written['n_validated']}, 90 % bootstrap interval" in text

    # Duplicates are not priced: one FedAvg run per distinct finished candidate.
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
    assert written["n_candidates"] == finished["candidate_id"].nunique()
    assert written["n_trials"] == len(finished)
