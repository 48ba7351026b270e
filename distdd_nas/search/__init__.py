"""Search on the distilled set: spaces, candidates, the proxy objective, backends, ranking.

Names are exported lazily (PEP 562), so importing one light submodule — NNI's dispatcher
imports :mod:`distdd_nas.search.backends.nni_tuner` — does not pay for torch, Optuna and pandas.
The backends live in :mod:`distdd_nas.search.backends` (NNI's needs the optional ``nni`` extra).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKENDS": "backends",
    "TRIAL_COLUMNS": "backends",
    "Objective": "backends",
    "ObjectiveRecipe": "backends",
    "Pruned": "backends",
    "Reporter": "backends",
    "SearchBackend": "backends",
    "create_backend": "backends",
    "Candidate": "candidate",
    "CandidateFactory": "candidate",
    "params_from_row": "candidate",
    "ProxyObjective": "objective",
    "ProxyScorer": "objective",
    "load_proxy_objective": "objective",
    "save_proxy_inputs": "objective",
    "server_holdout": "objective",
    "split_server_holdout": "objective",
    "OptunaBackend": "backends",
    "rank_trials": "ranking",
    "select_for_validation": "ranking",
    "simulated_fedavg": "simulate",
    "virtual_clients": "simulate",
    "virtual_counts": "simulate",
    "Param": "space",
    "SearchSpace": "space",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
