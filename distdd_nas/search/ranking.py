"""From a trial table to the candidates worth federated validation (pure functions)."""

from __future__ import annotations

import pandas as pd

from distdd_nas.errors import ConfigError
from distdd_nas.seeding import numpy_rng

SELECTED_AS = ("top", "control", "reference")


def rank_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed trials, one row per candidate, ranked by proxy score (``proxy_rank`` 1 = best).

    A candidate scored twice keeps its best row; ties are broken by trial number so the ranking
    is deterministic. Adds ``proxy_score`` (= ``value``). Pruned and failed trials have no final
    score and are left out.
    """
    if len(trials) == 0:
        out = trials.copy()
        out.insert(0, "proxy_rank", pd.Series(dtype="int64"))
        return out.assign(proxy_score=pd.Series(dtype="float64"))
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    done = done.sort_values(["value", "number"], ascending=[False, True], kind="stable")
    best = done.drop_duplicates("candidate_id", keep="first").reset_index(drop=True)
    best.insert(0, "proxy_rank", range(1, len(best) + 1))
    return best.assign(proxy_score=best["value"].astype(float))


def select_for_validation(
    ranking: pd.DataFrame, *, top_k: int, n_random: int, seed: int, reference: bool = False
) -> pd.DataFrame:
    """The top-k by proxy score plus ``n_random`` seeded random controls from the rest, plus
    (``reference``) the study's reference configuration (the row whose ``reference`` column is
    true) if neither group holds it.

    Adds ``selected_as`` = ``top`` | ``control`` | ``reference``; rows stay in proxy-rank order
    within each group. The controls keep the correlation honest: a proxy can order its
    favourites well and still mis-rank the field (see distdd-notes.md); the reference answers
    "did searching beat what the study would have trained anyway?". With fewer candidates than
    asked for, all of them are selected.

    Raises:
        ConfigError: ``top_k`` < 1 or ``n_random`` < 0.
    """
    if top_k < 1 or n_random < 0:
        raise ConfigError(
            f"top_k={top_k}, n_random={n_random} are out of range; use top_k >= 1 "
            "and n_random >= 0"
        )
    ranked = (
        ranking.sort_values("proxy_rank", kind="stable") if "proxy_rank" in ranking else ranking
    )
    top = ranked.head(top_k).assign(selected_as="top")
    rest = ranked.iloc[top_k:]
    k = min(n_random, len(rest))
    parts = [top]
    if k:
        rng = numpy_rng(seed, "validation", "controls")
        picks = rng.choice(len(rest), size=k, replace=False)
        parts.append(rest.iloc[sorted(int(i) for i in picks)].assign(selected_as="control"))
    chosen = pd.concat(parts, ignore_index=True)
    if reference and "reference" in ranked:
        refs = ranked[ranked["reference"].astype(bool)]
        if len(refs) and not chosen["candidate_id"].isin(refs["candidate_id"]).any():
            chosen = pd.concat([chosen, refs.head(1).assign(selected_as="reference")])
    return chosen.reset_index(drop=True)


__all__ = ["SELECTED_AS", "rank_trials", "select_for_validation"]
