"""search → validate → report with the pure functions only, wired as pipeline.py should.

This is the recipe given to the lead (see the search package's docs): the proxy objective on a
distilled set, a resumable backend, ranking and selection, real FedAvg on the selection through
the same CandidateFactory, then metrics, cost, figures and report.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distdd_nas.distill.result import DistilledSet
from distdd_nas.federation import InProcessEngine
from distdd_nas.federation.registry import default_tasks
from distdd_nas.federation.setup import Federation
from distdd_nas.fl.fedavg import FedAvgSettings, run_fedavg
from distdd_nas.models import ArchSpec
from distdd_nas.report import (
    communication_cost,
    communication_figure,
    distilled_grid_figure,
    history_figure,
    proxy_vs_fedavg_figure,
    render_markdown,
    study_summary,
)
from distdd_nas.search import (
    CandidateFactory,
    ProxyObjective,
    ProxyScorer,
    SearchSpace,
    create_backend,
    rank_trials,
    select_for_validation,
    split_server_holdout,
)
from distdd_nas.training import TrainSettings
from tests.search.conftest import REFERENCE, TINY_SPACE

pytestmark = pytest.mark.timeout(180)


def test_search_validate_report(
    federation: Federation, distilled: DistilledSet, counts: np.ndarray, tmp_path: Path
) -> None:
    seed = 0
    base = FedAvgSettings(rounds=2, local=TrainSettings(epochs=1, lr=0.05, batch_size=32))
    factory = CandidateFactory(reference=ArchSpec(depth=2, width=8),
                               train=TrainSettings(epochs=5, lr=0.01, batch_size=32))
    # search: federated scoring through the study's engine (metered)
    engine = InProcessEngine(clients=federation.clients, tasks=default_tasks(), seed=seed)
    scorer = ProxyScorer(distilled=distilled, like=federation.train, scoring="federated",
                         engine=engine, client_class_counts=counts, fedavg=base, seed=seed)
    objective = ProxyObjective(scorer=scorer, candidates=factory)
    space = SearchSpace.from_dict(TINY_SPACE)
    backend = create_backend("optuna", space=space, storage=None, study_name="wiring",
                             sampler="tpe", seed=seed, workdir=tmp_path / "search",
                             reference=space.point(REFERENCE))
    trials = backend.optimize(objective, n_trials=5)
    trials.to_csv(tmp_path / "trials.csv", index=False)
    # validate: top-2 + 1 control, rebuilt from the ranking rows, real FedAvg
    ranking = rank_trials(pd.read_csv(tmp_path / "trials.csv"))
    selection = select_for_validation(ranking, top_k=2, n_random=1, seed=seed)
    _, final_test = split_server_holdout(federation.test, seed=seed)
    rows, ledgers = [], []
    for _, row in selection.iterrows():
        candidate = factory.from_row(row.to_dict())
        assert candidate.candidate_id == row["candidate_id"]  # same candidate as the proxy's
        fl = InProcessEngine(clients=federation.clients, tasks=default_tasks(), seed=seed)
        result = run_fedavg(fl, arch=candidate.arch, test=final_test,
                            settings=candidate.fedavg_settings(base), seed=seed)
        rows.append({"candidate_id": candidate.candidate_id, "selected_as": row["selected_as"],
                     "proxy_rank": row["proxy_rank"], "proxy_score": row["proxy_score"],
                     "fedavg_accuracy": result.test_accuracy, "model": row["model"],
                     "num_parameters": row["num_parameters"], "bytes_up": fl.ledger.bytes_up,
                     "bytes_down": fl.ledger.bytes_down, "wall_s": result.wall_s})
        ledgers.append(fl.ledger.to_frame().assign(candidate_id=candidate.candidate_id))
    validation = pd.DataFrame(rows)
    # report
    cost = communication_cost(trials=trials, validation=validation, rounds=base.rounds,
                              clients_per_round=federation.num_clients,
                              num_clients=federation.num_clients, distill_bytes=10**6,
                              distill_s=30.0, validation_ledger=pd.concat(ledgers),
                              search_ledger=engine.ledger.to_frame())
    assert cost.search_bytes == engine.ledger.bytes_up + engine.ledger.bytes_down > 0
    assert cost.validate_bytes == sum(r["bytes_up"] + r["bytes_down"] for r in rows)
    summary = study_summary(validation=validation, cost=cost, n_trials=len(trials), top_k=2)
    json.dumps(summary)
    text = render_markdown(summary, validation=validation, ranking=ranking, title="wiring")
    assert "Kendall τ" in text and "Break-even" in text
    figures = {
        "proxy_vs_fedavg.png": proxy_vs_fedavg_figure(validation),
        "communication.png": communication_figure(cost),
        "history.png": history_figure(trials),
        "grid.png": distilled_grid_figure(distilled, mean=federation.train.mean,
                                          std=federation.train.std,
                                          classes=federation.train.classes),
    }
    for name, fig in figures.items():
        fig.savefig(tmp_path / name, dpi=40)
