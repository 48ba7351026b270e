"""The answer a study's user came for, read off the validation table: which candidate to use,
with its parameters as Optuna's ``best_params`` shows them, its real FedAvg accuracy against
the study's own reference configuration, and what the proxy alone would have picked.

The recommendation is the best *real FedAvg* accuracy among the validated candidates (the
validation trained them, so a user keeps the one FedAvg liked best), not the proxy's top-1;
both are reported, and their difference is the proxy's top-1 regret.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from distdd_nas.search.candidate import params_from_row


def _pick(row: pd.Series, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_candidate_id": str(row["candidate_id"]),
        f"{prefix}_model": str(row.get("model", "")),
        f"{prefix}_params": params_from_row(row.to_dict()),
        f"{prefix}_fedavg_accuracy": float(row["fedavg_accuracy"]),
        f"{prefix}_proxy_rank": int(row["proxy_rank"]),
    }


def study_answer(validation: pd.DataFrame) -> dict[str, Any]:
    """``best_*`` (best real FedAvg accuracy among the validated; ties: better proxy rank),
    ``proxy_top1_*`` (the proxy's favourite), ``reference_*`` (the study's reference
    configuration, when it was validated) and ``best_minus_reference`` in accuracy points
    (fraction); an empty table gives an empty answer."""
    if len(validation) == 0:
        return {}
    ordered = validation.sort_values(
        ["fedavg_accuracy", "proxy_rank"], ascending=[False, True], kind="stable"
    )
    best = ordered.iloc[0]
    answer = {
        **_pick(best, "best"),
        **_pick(validation.sort_values("proxy_rank", kind="stable").iloc[0], "proxy_top1"),
    }
    if "reference" in validation:
        refs = validation[validation["reference"].astype(bool)]
        if len(refs):
            ref = refs.iloc[0]
            answer.update(_pick(ref, "reference"))
            answer["best_minus_reference"] = float(best["fedavg_accuracy"]) - float(
                ref["fedavg_accuracy"]
            )
    return answer


__all__ = ["study_answer"]
