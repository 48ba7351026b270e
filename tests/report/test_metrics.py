"""Ranking and cost metrics against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.report.metrics import (
    CostComparison,
    break_even,
    bytes_per_parameter,
    communication_cost,
    kendall_tau,
    ranking_metrics,
    spearman_rho,
    study_summary,
    top1_regret,
    topk_overlap,
)


def test_rank_correlations_by_hand() -> None:
    x = [0.1, 0.2, 0.3, 0.4]
    assert kendall_tau(x, [1, 2, 3, 4]) == pytest.approx(1.0)
    assert kendall_tau(x, [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman_rho(x, [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair of six: τ = (5 − 1) / 6; rank differences (0, 1, −1, 0):
    # ρ = 1 − 6·Σd² / (n(n² − 1)) = 1 − 12/60
    y = [0.5, 0.7, 0.6, 0.9]
    assert kendall_tau(x, y) == pytest.approx(2 / 3)
    assert spearman_rho(x, y) == pytest.approx(0.8)
    assert math.isnan(kendall_tau([0.3], [0.5]))
    assert math.isnan(spearman_rho([0.3, 0.3], [0.5, 0.6]))  # constant proxy
    with pytest.raises(ConfigError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_regret_and_overlap_by_hand() -> None:
    proxy = np.array([0.9, 0.8, 0.3, 0.5])
    fedavg = np.array([0.70, 0.85, 0.60, 0.80])
    assert top1_regret(proxy, fedavg) == pytest.approx(0.85 - 0.70)
    assert top1_regret(fedavg, fedavg) == 0.0
    # top-2 by proxy {0, 1}, by FedAvg {1, 3}: one shared
    assert topk_overlap(proxy, fedavg, 2) == 0.5
    assert topk_overlap(proxy, fedavg, 10) == 1.0  # k capped at 4
    assert math.isnan(top1_regret([], []))
    frame = pd.DataFrame({"proxy_score": proxy, "fedavg_accuracy": fedavg})
    m = ranking_metrics(frame, top_k=2)
    assert m["top1_regret"] == pytest.approx(0.15) and m["topk_overlap"] == 0.5
    assert m["best_fedavg_accuracy"] == 0.85 and m["proxy_top1_fedavg_accuracy"] == 0.70


def test_break_even_formula() -> None:
    # D + V = 1200, s̄ = 10, c̄ = 110: at M = 12 both cost 1320, so DistDD wins from 13 on
    assert break_even(1200, 10, 110) == 13
    assert 13 * 110 > 1200 + 13 * 10 and not 12 * 110 > 1200 + 12 * 10
    assert break_even(1199, 10, 110) == 12
    assert break_even(0, 0, 5) == 1
    assert break_even(1200, 110, 110) is None
    cost = CostComparison(
        distill_bytes=1000,
        search_bytes=100,
        validate_bytes=200,
        fedavg_bytes_per_candidate=110.0,
        n_candidates=10,
        distill_s=50.0,
        search_s=10.0,
        validate_s=30.0,
        fedavg_s_per_candidate=3.0,
    )
    assert cost.distdd_bytes == 1300 and cost.fedavg_nas_bytes == 1100
    assert cost.comm_ratio == pytest.approx(1100 / 1300)
    assert cost.break_even_candidates() == 13
    assert cost.break_even_candidates_time() == 41  # 80 / (3 − 1) = 40 → 41
    assert cost.time_ratio == pytest.approx(30 / 90)


def trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "number": [0, 1, 2, 3, 4],
            "candidate_id": ["a", "b", "c", "a", "d"],
            "state": ["COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE", "FAIL"],
            "bytes_up": [0, 0, 0, 0, 0],
            "bytes_down": [400, 800, 200, 400, 0],
            "duration_s": [1.0, 2.0, 1.0, 0.0, 0.5],
            "num_parameters": [100, 200, 50, 100, 0],
        }
    )


def validation() -> pd.DataFrame:
    # 5 rounds × 3 clients × 2 directions × 4 bytes per parameter
    return pd.DataFrame(
        {
            "candidate_id": ["a", "b"],
            "num_parameters": [100, 200],
            "bytes_up": [6000, 12000],
            "bytes_down": [6000, 12000],
            "wall_s": [3.0, 6.0],
            "proxy_score": [0.6, 0.8],
            "fedavg_accuracy": [0.7, 0.75],
        }
    )


def test_communication_cost_measures_and_extrapolates() -> None:
    cost = communication_cost(
        trials=trials(),
        validation=validation(),
        rounds=5,
        clients_per_round=3,
        num_clients=4,
        distill_bytes=100_000,
        distill_s=20.0,
    )
    assert bytes_per_parameter(validation(), rounds=5, clients_per_round=3) == 4.0
    # a, b measured (12000 + 24000); c extrapolated: 4 B × 50 × 5 rounds × 3 clients × 2
    assert cost.n_candidates == 3
    assert cost.fedavg_nas_bytes == pytest.approx(12000 + 24000 + 6000)
    assert cost.search_bytes == 1800 and cost.validate_bytes == 36000
    assert cost.distdd_bytes == 100_000 + 1800 + 36000
    assert cost.comm_ratio == pytest.approx(42000 / 137800)
    # seconds: 9 s for 300 parameters → 0.002 s per parameter-round-client; c: 0.002·50·15
    assert cost.fedavg_nas_s == pytest.approx(3 + 6 + 1.5)
    assert cost.distdd_s == pytest.approx(20 + 4.5 + 9)
    assert cost.break_even_candidates() == break_even(136000, 600, 14000)
    summary = cost.to_summary()
    assert summary["bytes_search_down"] == 1800 and summary["bytes_validate_up"] == 18000
    assert summary["bytes_distdd_per_client"] == pytest.approx(137800 / 4)


def test_shorter_validation_runs_are_scaled_to_full_trainings() -> None:
    full = communication_cost(
        trials=trials(),
        validation=validation(),
        rounds=5,
        clients_per_round=3,
        num_clients=4,
        distill_bytes=0,
    )
    # Validated candidates are priced at what they measured, nothing scaled: half the rounds
    # in the validation means half the FedAvg-NAS bytes (the comparison is at those rounds).
    short = validation().assign(bytes_up=[1200, 2400], bytes_down=[1200, 2400], wall_s=[0.6, 1.2])
    at_one = communication_cost(
        trials=trials(),
        validation=short,
        rounds=1,
        clients_per_round=3,
        num_clients=4,
        distill_bytes=0,
    )
    assert at_one.fedavg_nas_bytes == pytest.approx(full.fedavg_nas_bytes / 5)
    assert at_one.validate_bytes == 7200  # what validation really sent


def test_bytes_per_parameter_from_the_ledger() -> None:
    rows = []
    for cid, d in (("a", 100), ("b", 200)):
        for rnd in range(1, 3):
            for client in range(3):
                for direction in ("down", "up"):
                    rows.append(
                        {
                            "round": rnd,
                            "client": client,
                            "direction": direction,
                            "kind": "local_train",
                            "bytes": 4 * d + 8,
                            "candidate_id": cid,
                        }
                    )
    ledger = pd.DataFrame(rows)
    b = bytes_per_parameter(validation(), rounds=5, clients_per_round=3, ledger=ledger)
    assert b == pytest.approx((12 * 408 + 12 * 808) / (12 * 100 + 12 * 200))
    distill = pd.DataFrame({"direction": ["up", "down", "up"], "bytes": [10, 5, 20]})
    cost = communication_cost(
        trials=trials(),
        validation=validation(),
        rounds=5,
        clients_per_round=3,
        num_clients=4,
        distill_ledger=distill,
        validation_ledger=ledger,
    )
    assert cost.distill_bytes == 35
    assert cost.to_summary()["bytes_distill_up"] == 30


def test_cost_errors() -> None:
    with pytest.raises(ConfigError, match="at least one validated candidate"):
        communication_cost(
            trials=trials(),
            validation=validation().iloc[:0],
            rounds=5,
            clients_per_round=3,
            num_clients=4,
            distill_bytes=0,
        )
    with pytest.raises(ConfigError, match="distill_bytes or distill_ledger"):
        communication_cost(
            trials=trials(), validation=validation(), rounds=5, clients_per_round=3, num_clients=4
        )


def test_study_summary_has_the_required_keys() -> None:
    cost = communication_cost(
        trials=trials(),
        validation=validation(),
        rounds=5,
        clients_per_round=3,
        num_clients=4,
        distill_bytes=1000,
    )
    s = study_summary(
        validation=validation(), cost=cost, n_trials=5, top_k=1, extra={"study": "x"}
    )
    for key in (
        "kendall_tau",
        "spearman_rho",
        "top1_regret",
        "n_trials",
        "n_validated",
        "bytes_distdd_total",
        "bytes_fedavg_nas_total",
        "comm_ratio",
        "break_even_candidates",
        "wall_s_distdd_total",
        "time_ratio",
    ):
        assert key in s
    assert s["n_validated"] == 2 and s["study"] == "x" and s["kendall_tau"] == 1.0
    import json

    json.dumps(s)  # JSON-able
