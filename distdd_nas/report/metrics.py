"""Ranking quality and cost figures of a study (pure functions of tables and numbers).

Ranking quality compares the proxy score of each validated candidate with its real FedAvg
accuracy: Kendall's τ-b and Spearman's ρ (SciPy), the top-k overlap, and the regret of the
proxy's favourite (best FedAvg accuracy among the validated minus that of the proxy's top-1).

Cost compares two ways to pick an architecture for a federation:

* **DistDD-based**: distil once + score every candidate on the distilled set (federated scoring
  sends each trained proxy model to the clients once) + real FedAvg for the validated few;
* **FedAvg-based NAS**: one real FedAvg training per distinct candidate (duplicate trials are
  not priced), at the rounds the validation trained — the rounds the accuracies are compared
  at, never another number. Measured for the validated candidates; for the others computed
  from their parameter count d with the bytes per parameter per message the validation ledgers
  show: ``b · d · rounds · clients · 2``. Both sides include the full training of the chosen
  model (validation trains it; FedAvg-NAS trains every candidate).

``break_even_candidates`` is the smallest number of candidates M for which the DistDD route
sends fewer bytes: with D, V the distillation and validation bytes, s̄ the scoring bytes per
candidate and c̄ the mean FedAvg bytes per candidate, M · c̄ > D + V + M · s̄, i.e.
``M* = floor((D + V) / (c̄ − s̄)) + 1`` (``None`` when c̄ <= s̄: never). Wall time likewise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from distdd_nas.errors import ConfigError
from distdd_nas.rank_metrics import kendall_tau, spearman_rho, top1_regret, topk_overlap


def ranking_metrics(
    validation: pd.DataFrame,
    *,
    top_k: int,
    proxy: str = "proxy_score",
    truth: str = "fedavg_accuracy",
) -> dict[str, float]:
    """Kendall τ, Spearman ρ, top-k overlap and top-1 regret of a validation table."""
    x = validation[proxy].to_numpy(dtype=float)
    y = validation[truth].to_numpy(dtype=float)
    return {
        "kendall_tau": kendall_tau(x, y),
        "spearman_rho": spearman_rho(x, y),
        "topk_overlap": topk_overlap(x, y, top_k),
        "top1_regret": top1_regret(x, y),
        "best_fedavg_accuracy": float(np.max(y)) if len(y) else float("nan"),
        "proxy_top1_fedavg_accuracy": float(y[int(np.argmax(x))]) if len(y) else float("nan"),
    }


def break_even(
    fixed: float, per_candidate_distdd: float, per_candidate_fedavg: float
) -> int | None:
    """Smallest integer M >= 1 with M · fedavg > fixed + M · distdd (None if never)."""
    margin = per_candidate_fedavg - per_candidate_distdd
    if margin <= 0:
        return None
    return max(1, math.floor(fixed / margin) + 1)


@dataclass(frozen=True)
class CostComparison:
    """Bytes and seconds of DistDD-based search against FedAvg-based search.

    Attributes:
        distill_bytes, search_bytes, validate_bytes: Measured traffic of each DistDD stage.
        fedavg_bytes_per_candidate: Mean FedAvg traffic of one candidate (measured or
            extrapolated, see the module docstring).
        n_candidates: Distinct candidates the search scored (M).
        distill_s, search_s, validate_s: Wall time of each DistDD stage.
        fedavg_s_per_candidate: Mean FedAvg wall time of one candidate.
        num_clients: Clients of the federation (for per-client figures).
        directions: Optional ``{stage: {"up": bytes, "down": bytes}}`` breakdown.
    """

    distill_bytes: int
    search_bytes: int
    validate_bytes: int
    fedavg_bytes_per_candidate: float
    n_candidates: int
    distill_s: float
    search_s: float
    validate_s: float
    fedavg_s_per_candidate: float
    num_clients: int = 1
    directions: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def distdd_bytes(self) -> int:
        return self.distill_bytes + self.search_bytes + self.validate_bytes

    @property
    def fedavg_nas_bytes(self) -> float:
        return self.fedavg_bytes_per_candidate * self.n_candidates

    @property
    def comm_ratio(self) -> float:
        """FedAvg-NAS bytes / DistDD bytes (> 1: DistDD sends less)."""
        return self.fedavg_nas_bytes / self.distdd_bytes if self.distdd_bytes else math.inf

    @property
    def distdd_s(self) -> float:
        return self.distill_s + self.search_s + self.validate_s

    @property
    def fedavg_nas_s(self) -> float:
        return self.fedavg_s_per_candidate * self.n_candidates

    @property
    def time_ratio(self) -> float:
        return self.fedavg_nas_s / self.distdd_s if self.distdd_s > 0 else math.inf

    def break_even_candidates(self) -> int | None:
        """Smallest M at which DistDD-based search sends fewer bytes (None: never)."""
        per = self.search_bytes / self.n_candidates if self.n_candidates else 0.0
        return break_even(
            self.distill_bytes + self.validate_bytes, per, self.fedavg_bytes_per_candidate
        )

    def break_even_candidates_time(self) -> int | None:
        """Smallest M at which DistDD-based search takes less wall time (None: never)."""
        per = self.search_s / self.n_candidates if self.n_candidates else 0.0
        return break_even(self.distill_s + self.validate_s, per, self.fedavg_s_per_candidate)

    def to_summary(self) -> dict[str, Any]:
        """The cost keys of a study summary (JSON-able)."""
        n = max(self.num_clients, 1)
        out: dict[str, Any] = {
            "bytes_distill": int(self.distill_bytes),
            "bytes_search": int(self.search_bytes),
            "bytes_validate": int(self.validate_bytes),
            "bytes_distdd_total": int(self.distdd_bytes),
            "bytes_fedavg_nas_total": float(self.fedavg_nas_bytes),
            "bytes_fedavg_per_candidate": float(self.fedavg_bytes_per_candidate),
            "bytes_distdd_per_client": self.distdd_bytes / n,
            "bytes_fedavg_nas_per_client": self.fedavg_nas_bytes / n,
            "comm_ratio": float(self.comm_ratio),
            "break_even_candidates": self.break_even_candidates(),
            "wall_s_distill": float(self.distill_s),
            "wall_s_search": float(self.search_s),
            "wall_s_validate": float(self.validate_s),
            "wall_s_distdd_total": float(self.distdd_s),
            "wall_s_fedavg_nas_total": float(self.fedavg_nas_s),
            "time_ratio": float(self.time_ratio),
            "break_even_candidates_time": self.break_even_candidates_time(),
            "n_candidates": int(self.n_candidates),
            "num_clients": int(self.num_clients),
        }
        for stage, split in self.directions.items():
            for direction, nbytes in split.items():
                out[f"bytes_{stage}_{direction}"] = int(nbytes)
        return out


def _up_down(ledger: pd.DataFrame | None) -> dict[str, int]:
    if ledger is None or len(ledger) == 0:
        return {"up": 0, "down": 0}
    sums = ledger.groupby("direction")["bytes"].sum()
    return {"up": int(sums.get("up", 0)), "down": int(sums.get("down", 0))}


def bytes_per_parameter(
    validation: pd.DataFrame,
    *,
    rounds: int,
    clients_per_round: int,
    ledger: pd.DataFrame | None = None,
) -> float:
    """Bytes per model parameter per message (one client, one direction, one round).

    From the per-candidate ``ledger`` (rows of ``local_train`` payloads with a ``candidate_id``
    column) when given: Σ bytes / Σ (parameters × messages). Otherwise from the validation
    totals: Σ bytes / Σ (parameters × rounds × clients_per_round × 2). About 4 for float32
    models (a little more with BatchNorm buffers, which travel but are not parameters).
    """
    d = validation.set_index("candidate_id")["num_parameters"].astype(float)
    if ledger is not None and len(ledger):
        rows = ledger[ledger["kind"] == "local_train"] if "kind" in ledger else ledger
        messages = rows.groupby("candidate_id")["bytes"].agg(["sum", "count"])
        params = d.reindex(messages.index)
        denom = float((params * messages["count"]).sum())
        return float(messages["sum"].sum()) / denom if denom > 0 else float("nan")
    total = float((validation["bytes_up"] + validation["bytes_down"]).sum())
    denom = float(d.sum()) * rounds * clients_per_round * 2
    return total / denom if denom > 0 else float("nan")


def _directions(
    trials: pd.DataFrame,
    validation: pd.DataFrame,
    distill_ledger: pd.DataFrame | None,
    search_ledger: pd.DataFrame | None,
) -> dict[str, dict[str, int]]:
    """Measured up/down bytes per DistDD stage (distillation only when its ledger is given)."""
    search = {"up": int(trials["bytes_up"].sum()), "down": int(trials["bytes_down"].sum())}
    out = {
        "search": _up_down(search_ledger) if search_ledger is not None else search,
        "validate": {
            "up": int(validation["bytes_up"].sum()),
            "down": int(validation["bytes_down"].sum()),
        },
    }
    if distill_ledger is not None:
        out["distill"] = _up_down(distill_ledger)
    return out


def _fedavg_totals(
    candidates: pd.DataFrame,
    validation: pd.DataFrame,
    *,
    rounds: int,
    clients_per_round: int,
    ledger: pd.DataFrame | None,
) -> tuple[float, float]:
    """FedAvg bytes and seconds for every distinct candidate at ``rounds`` rounds: measured
    for the validated ones, computed from parameter counts for the others."""
    measured = validation.drop_duplicates("candidate_id").set_index("candidate_id")
    b = bytes_per_parameter(
        validation.drop_duplicates("candidate_id"),
        rounds=rounds,
        clients_per_round=clients_per_round,
        ledger=ledger,
    )
    d_val = measured["num_parameters"].astype(float)
    s_per = float(measured["wall_s"].sum()) / float(d_val.sum() * rounds * clients_per_round)
    fed_bytes, fed_s = 0.0, 0.0
    for _, row in candidates.iterrows():
        cid = row["candidate_id"]
        if cid in measured.index:
            fed_bytes += float(measured.at[cid, "bytes_up"] + measured.at[cid, "bytes_down"])
            fed_s += float(measured.at[cid, "wall_s"])
        else:
            d = float(row.get("num_parameters", 0) or 0) or float(d_val.mean())
            fed_bytes += b * d * rounds * clients_per_round * 2
            fed_s += s_per * d * rounds * clients_per_round
    return fed_bytes, fed_s


def communication_cost(
    *,
    trials: pd.DataFrame,
    validation: pd.DataFrame,
    rounds: int,
    clients_per_round: int,
    num_clients: int,
    distill_bytes: int | None = None,
    distill_ledger: pd.DataFrame | None = None,
    distill_s: float = 0.0,
    validation_ledger: pd.DataFrame | None = None,
    search_ledger: pd.DataFrame | None = None,
) -> CostComparison:
    """Measured DistDD cost versus FedAvg-per-candidate cost of every searched candidate.

    Args:
        trials: The search's trial table (``candidate_id``, ``state``, ``bytes_up``,
            ``bytes_down``, ``duration_s``, ``num_parameters``). Every trial's scoring traffic
            and time count; the FedAvg side counts each distinct finished candidate once.
        validation: One row per validated candidate: ``candidate_id``, ``num_parameters``,
            ``bytes_up``, ``bytes_down``, ``wall_s`` of its real FedAvg run.
        rounds: FedAvg rounds of one candidate's training: the rounds the validation ran (its
            accuracies are what the ranking is judged on), so both sides use one number.
        clients_per_round: Clients selected per round (``max(1, round(fraction · clients))``).
        num_clients: Clients of the federation (per-client figures).
        distill_bytes: Distillation traffic, if no ``distill_ledger`` is given.
        distill_ledger: The distillation ledger frame (columns direction, bytes).
        distill_s: Distillation wall time.
        validation_ledger: Concatenated validation ledgers with a ``candidate_id`` column
            (bytes per parameter from actual messages; optional).
        search_ledger: The search engine's ledger frame (up/down split; optional).

    Raises:
        ConfigError: Nothing validated, or neither distill_bytes nor distill_ledger given.
    """
    if len(validation) == 0:
        raise ConfigError(
            "cost extrapolation needs at least one validated candidate; set validate.top_k >= 1"
        )
    if distill_bytes is None and distill_ledger is None:
        raise ConfigError("pass distill_bytes or distill_ledger to communication_cost")
    candidates = trials[trials["state"].isin(["COMPLETE", "PRUNED"])].drop_duplicates(
        "candidate_id"
    )
    fed_bytes, fed_s = _fedavg_totals(
        candidates,
        validation,
        rounds=rounds,
        clients_per_round=clients_per_round,
        ledger=validation_ledger,
    )
    m = len(candidates)
    directions = _directions(trials, validation, distill_ledger, search_ledger)
    distill = directions.get("distill")
    search, validate = directions["search"], directions["validate"]
    return CostComparison(
        distill_bytes=int(
            distill["up"] + distill["down"] if distill is not None else distill_bytes or 0
        ),
        search_bytes=search["up"] + search["down"],
        validate_bytes=validate["up"] + validate["down"],
        fedavg_bytes_per_candidate=fed_bytes / m if m else 0.0,
        n_candidates=m,
        distill_s=float(distill_s),
        search_s=float(trials["duration_s"].fillna(0.0).sum()),
        validate_s=float(validation["wall_s"].sum()),
        fedavg_s_per_candidate=fed_s / m if m else 0.0,
        num_clients=num_clients,
        directions=directions,
    )


def study_summary(
    *,
    validation: pd.DataFrame,
    cost: CostComparison,
    n_trials: int,
    top_k: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary dict of a study (``summary.json`` and :func:`render_markdown`'s input).

    Keys include kendall_tau, spearman_rho, topk_overlap, top1_regret, n_trials, n_validated,
    bytes_distdd_total, bytes_fedavg_nas_total, comm_ratio, break_even_candidates and the wall
    time counterparts; ``extra`` entries are added as they are (e.g. distilled accuracy).
    """
    summary: dict[str, Any] = {
        **ranking_metrics(validation, top_k=top_k),
        "n_trials": int(n_trials),
        "n_validated": len(validation),
        "top_k": int(top_k),
        **cost.to_summary(),
    }
    if extra:
        summary.update(extra)
    return summary


__all__ = [
    "CostComparison",
    "break_even",
    "bytes_per_parameter",
    "communication_cost",
    "kendall_tau",
    "ranking_metrics",
    "spearman_rho",
    "study_summary",
    "top1_regret",
    "topk_overlap",
]
