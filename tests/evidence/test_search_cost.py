"""Search-cost replays on hand-made pools: known budgets for random search, successive halving
and DistDD-NAS, and picks judged by the other replicate."""

from __future__ import annotations

import pandas as pd
import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.evidence.search_cost import (
    Pool,
    compare_searches,
    distdd_pick,
    pruned_search,
    summarise,
)
from distdd_nas.models import ArchSpec
from distdd_nas.search.candidate import CandidateFactory
from distdd_nas.training import TrainSettings

R = 9
FACTORY = CandidateFactory(reference=ArchSpec(depth=1, width=8), train=TrainSettings())
LABELS = [f"c{i}" for i in range(6)]
#: label → a real candidate (the replay finds curves by candidate_id)
CANDIDATES = {name: FACTORY({"arch.width": 8 + i}) for i, name in enumerate(LABELS)}
ID = {name: c.candidate_id for name, c in CANDIDATES.items()}


def _pool(observed: dict[str, float], truth: dict[str, float]) -> Pool:
    """Curves rising linearly to the given final accuracy; each round costs 10 bytes up and
    10 down and 1 s, so a candidate run for r rounds costs 20 r bytes and r seconds."""
    rows = []
    for replicate, finals in ((1, observed), (0, truth)):
        for name, acc in finals.items():
            for r in range(1, R + 1):
                rows.append(
                    {
                        "candidate_id": ID[name],
                        "replicate": replicate,
                        "round": r,
                        "test_accuracy": acc * r / R,
                        "bytes_up": 10 * r,
                        "bytes_down": 10 * r,
                        "wall_s": float(r),
                    }
                )
    return Pool(pd.DataFrame(rows), {ID[n]: CANDIDATES[n] for n in observed}, rounds=R)


def _ids(*names: str) -> list[str]:
    return [ID[n] for n in names]


def test_successive_halving_with_the_best_first_prunes_the_rest_at_round_one() -> None:
    finals = {"c0": 0.9, "c1": 0.8, "c2": 0.7, "c3": 0.6}
    trials = pruned_search(
        _pool(finals, finals), _ids("c0", "c1", "c2", "c3"), pruner="successive_halving", seed=0
    )
    assert trials["state"].tolist() == ["COMPLETE", "PRUNED", "PRUNED", "PRUNED"]
    assert trials["rounds"].tolist() == [9, 1, 1, 1]
    assert int(trials["bytes"].sum()) == 20 * (9 + 1 + 1 + 1)
    assert float(trials["seconds"].sum()) == 12.0


def test_successive_halving_with_improving_candidates_prunes_nothing() -> None:
    finals = {"c0": 0.6, "c1": 0.7, "c2": 0.8, "c3": 0.9}
    trials = pruned_search(
        _pool(finals, finals), _ids("c0", "c1", "c2", "c3"), pruner="successive_halving", seed=0
    )
    assert (trials["state"] == "COMPLETE").all() and int(trials["bytes"].sum()) == 4 * 20 * R


def test_distdd_pick_pays_distillation_scoring_and_top_k_and_is_judged_by_truth() -> None:
    pool = _pool({"c0": 0.9, "c1": 0.8, "c2": 0.7}, {"c0": 0.5, "c1": 0.8, "c2": 0.7})
    ids = _ids("c0", "c1", "c2")
    pick, spent, took, n = distdd_pick(
        pool,
        ids,
        scores=dict(zip(ids, (0.1, 0.3, 0.2), strict=True)),
        scoring_bytes=dict.fromkeys(ids, 5.0),
        scoring_seconds=dict.fromkeys(ids, 0.5),
        top_k=2,
        distill_bytes=1000.0,
        distill_seconds=100.0,
    )
    # proxy's top 2 = c1, c2; observed finals 0.8 vs 0.7 → c1; distil + 3 scorings + 2 × 9 rounds
    assert pick == ID["c1"] and n == 2
    assert spent == 1000 + 15 + 2 * 20 * R and took == 100 + 1.5 + 2 * R


def test_compare_searches_is_seeded_and_judges_picks_by_the_other_replicate() -> None:
    observed = {n: 0.5 + 0.04 * i for i, n in enumerate(LABELS)}
    truth = {n: 0.9 - 0.04 * i for i, n in enumerate(LABELS)}  # the observed curves mislead
    pool = _pool(observed, truth)
    distdd = {
        "scores": {ID[n]: -i for i, n in enumerate(LABELS)},  # a proxy that agrees with truth
        "scoring_bytes": dict.fromkeys(ID.values(), 1.0),
        "scoring_seconds": dict.fromkeys(ID.values(), 0.0),
        "top_k": 1,
        "distill_bytes": 0.0,
        "distill_seconds": 0.0,
    }
    args = {"size": 4, "repetitions": 5, "seed": 3, "random_budget": 4, "distdd": distdd}
    first = summarise(compare_searches(pool, **args))  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(first, summarise(compare_searches(pool, **args)))  # type: ignore[arg-type]
    by = first.set_index("method")
    random_row = by.loc["random search, full FedAvg (4 candidates)"]
    assert random_row["bytes_mean"] == 4 * 20 * R  # four full trainings every repetition
    assert random_row["found_best"] == 0.0  # it trusts the misleading curves
    distdd_row = by.loc["DistDD-NAS (proxy on 4, top 1 FedAvg)"]
    assert distdd_row["found_best"] == 1.0 and distdd_row["regret_mean"] == 0.0
    assert distdd_row["bytes_mean"] == 4 * 1.0 + 20 * R
    with pytest.raises(ConfigError, match=r"need 1 <= random_budget"):
        compare_searches(pool, **{**args, "size": 7})  # type: ignore[arg-type]


def test_sub_pools_follow_the_pool_order_not_the_candidate_ids() -> None:
    """Candidate ids hash the proxy's training settings; two replays of one table under two
    proxy settings must draw the same sub-pools, so the same seeds give the same outcomes for
    the same candidates under their other ids."""
    observed = {n: 0.5 + 0.03 * i for i, n in enumerate(LABELS)}
    truth = {n: 0.8 - 0.05 * (i % 3) for i, n in enumerate(LABELS)}
    pool = _pool(observed, truth)
    longer = CandidateFactory(reference=ArchSpec(depth=1, width=8), train=TrainSettings(epochs=2))
    again = {ID[n]: longer({"arch.width": 8 + i}) for i, n in enumerate(LABELS)}
    renamed = {old: c.candidate_id for old, c in again.items()}
    assert [renamed[k] for k in sorted(renamed)] != sorted(renamed.values()), (
        "the renaming must change the ids' sort order, or the test cannot fail"
    )
    other = Pool(
        pool.curves.assign(candidate_id=pool.curves["candidate_id"].map(renamed)),
        {renamed[k]: again[k] for k in pool.candidates},
        rounds=R,
    )

    def distdd(names: dict[str, str]) -> dict[str, object]:
        return {
            "scores": {names[ID[n]]: float(i % 4) for i, n in enumerate(LABELS)},
            "scoring_bytes": dict.fromkeys(names.values(), 1.0),
            "scoring_seconds": dict.fromkeys(names.values(), 0.0),
            "top_k": 1,
            "distill_bytes": 0.0,
            "distill_seconds": 0.0,
        }

    args = {"size": 3, "repetitions": 8, "seed": 5, "random_budget": 2}
    same = {v: v for v in ID.values()}
    first = compare_searches(pool, distdd=distdd(same), **args)  # type: ignore[arg-type]
    second = compare_searches(other, distdd=distdd(renamed), **args)  # type: ignore[arg-type]
    back = {v: k for k, v in renamed.items()}
    assert [(o.method, o.picked, o.truth, o.best_truth, o.bytes) for o in first] == [
        (o.method, back[o.picked], o.truth, o.best_truth, o.bytes) for o in second
    ]
    assert len({o.best_truth for o in first}) > 1, "the sub-pools must differ between repetitions"
