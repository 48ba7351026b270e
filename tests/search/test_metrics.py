"""Ranking metrics and cost arithmetic against hand-computed references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from distdd_nas.report.metrics import (
    CostComparison,
    kendall_tau,
    spearman_rho,
    top1_regret,
    topk_overlap,
)
from distdd_nas.search.ranking import rank_trials, select_for_validation


def test_correlations_against_hand_values() -> None:
    proxy = np.array([0.1, 0.2, 0.3, 0.4])
    assert kendall_tau(proxy, proxy * 2) == pytest.approx(1.0)
    assert kendall_tau(proxy, -proxy) == pytest.approx(-1.0)
    # One discordant pair (3,4 swapped) out of 6: tau = (5 - 1) / 6.
    assert kendall_tau(proxy, np.array([1.0, 2.0, 4.0, 3.0])) == pytest.approx(4 / 6)
    # Spearman: d = (0,0,1,-1), rho = 1 - 6·2 / (4·15) = 0.8.
    assert spearman_rho(proxy, np.array([1.0, 2.0, 4.0, 3.0])) == pytest.approx(0.8)
    assert np.isnan(kendall_tau(proxy[:1], proxy[:1]))


def test_regret_and_overlap_by_hand() -> None:
    proxy = np.array([0.9, 0.5, 0.7])
    fedavg = np.array([0.80, 0.86, 0.83])
    assert top1_regret(proxy, fedavg) == pytest.approx(0.06)
    assert topk_overlap(proxy, fedavg, 2) == pytest.approx(0.5)  # {0,2} vs {1,2}


def test_break_even_formula() -> None:
    cost = CostComparison(
        distill_bytes=1000,
        search_bytes=100,
        validate_bytes=500,
        fedavg_bytes_per_candidate=160.0,
        n_candidates=10,
        distill_s=1,
        search_s=1,
        validate_s=1,
        fedavg_s_per_candidate=1,
    )
    # per-trial search 10 bytes; margin 150; fixed 1500 → M > 10 → 11.
    assert cost.break_even_candidates() == 11
    assert cost.distdd_bytes == 1600 and cost.fedavg_nas_bytes == 1600
    assert cost.comm_ratio == pytest.approx(1.0)
    never = CostComparison(1, 100, 1, 5.0, 10, 1, 1, 1, 1)
    assert never.break_even_candidates() is None  # never cheaper


def test_ranking_and_selection_are_deterministic() -> None:
    trials = pd.DataFrame(
        {
            "number": range(8),
            "candidate_id": list("abcdefgg"),
            "value": [0.5, 0.9, np.nan, 0.7, 0.1, 0.3, 0.2, 0.6],
            "state": ["COMPLETE"] * 2 + ["FAIL"] + ["COMPLETE"] * 5,
        }
    )
    ranking = rank_trials(trials)
    assert ranking["candidate_id"].tolist() == ["b", "d", "g", "a", "f", "e"]
    assert ranking["proxy_rank"].tolist() == [1, 2, 3, 4, 5, 6]
    sel = select_for_validation(ranking, top_k=2, n_random=2, seed=3)
    assert sel["selected_as"].tolist() == ["top", "top", "control", "control"]
    assert sel["candidate_id"].tolist()[:2] == ["b", "d"]
    again = select_for_validation(ranking, top_k=2, n_random=2, seed=3)
    assert again.equals(sel)
    assert set(sel["candidate_id"][2:]) <= {"g", "a", "f", "e"}
