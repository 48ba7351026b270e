"""Ranking and the selection of top-k plus seeded random controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.search.ranking import rank_trials, select_for_validation


def trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "number": [0, 1, 2, 3, 4, 5, 6],
            "candidate_id": ["a", "b", "c", "a", "d", "e", "f"],
            "value": [0.5, 0.9, np.nan, 0.7, 0.9, np.nan, 0.1],
            "state": [
                "COMPLETE",
                "COMPLETE",
                "PRUNED",
                "COMPLETE",
                "COMPLETE",
                "FAIL",
                "COMPLETE",
            ],
        }
    )


def test_rank_trials_keeps_best_row_per_candidate_and_breaks_ties_by_number() -> None:
    ranking = rank_trials(trials())
    assert list(ranking["candidate_id"]) == ["b", "d", "a", "f"]
    assert list(ranking["proxy_rank"]) == [1, 2, 3, 4]
    assert list(ranking["number"]) == [1, 4, 3, 6]  # a's better (later) trial
    assert list(ranking["proxy_score"]) == [0.9, 0.9, 0.7, 0.1]
    assert len(rank_trials(trials().iloc[:0])) == 0


def test_selection_is_top_k_plus_seeded_disjoint_controls() -> None:
    ranking = pd.DataFrame(
        {
            "proxy_rank": range(1, 21),
            "candidate_id": list("abcdefghijklmnopqrst"),
            "value": np.linspace(1, 0, 20),
        }
    )
    sel = select_for_validation(ranking, top_k=3, n_random=4, seed=7)
    assert list(sel["selected_as"]) == ["top"] * 3 + ["control"] * 4
    assert list(sel["candidate_id"][:3]) == ["a", "b", "c"]
    controls = set(sel["candidate_id"][3:])
    assert len(controls) == 4 and not controls & {"a", "b", "c"}
    again = select_for_validation(ranking, top_k=3, n_random=4, seed=7)
    pd.testing.assert_frame_equal(sel, again)
    other = [
        set(select_for_validation(ranking, top_k=3, n_random=4, seed=s)["candidate_id"])
        for s in range(5)
    ]
    assert len({frozenset(o) for o in other}) > 1  # the seed matters


def test_selection_with_few_candidates_and_bad_arguments() -> None:
    ranking = rank_trials(trials())
    sel = select_for_validation(ranking, top_k=3, n_random=5, seed=0)
    assert sorted(sel["candidate_id"]) == ["a", "b", "d", "f"]
    assert (
        select_for_validation(ranking, top_k=10, n_random=0, seed=0)["selected_as"].eq("top").all()
    )
    with pytest.raises(ConfigError, match="top_k=0"):
        select_for_validation(ranking, top_k=0, n_random=1, seed=0)
