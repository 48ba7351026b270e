"""Search on the distilled set: spaces, candidates, the proxy objective, backends, ranking.

The NNI backend lives in :mod:`distdd_nas.search.nni_backend` and is imported only when used
(``nni`` is an optional extra).
"""

from distdd_nas.search.backends import (
    BACKENDS,
    TRIAL_COLUMNS,
    Objective,
    ObjectiveRecipe,
    Pruned,
    Reporter,
    SearchBackend,
    create_backend,
)
from distdd_nas.search.candidate import Candidate, CandidateFactory, params_from_row
from distdd_nas.search.objective import (
    ProxyObjective,
    ProxyScorer,
    load_proxy_objective,
    save_proxy_inputs,
    server_holdout,
    split_server_holdout,
)
from distdd_nas.search.optuna_backend import OptunaBackend
from distdd_nas.search.ranking import rank_trials, select_for_validation
from distdd_nas.search.simulate import simulated_fedavg, virtual_clients, virtual_counts
from distdd_nas.search.space import Param, SearchSpace

__all__ = [
    "BACKENDS",
    "TRIAL_COLUMNS",
    "Candidate",
    "CandidateFactory",
    "Objective",
    "ObjectiveRecipe",
    "OptunaBackend",
    "Param",
    "ProxyObjective",
    "ProxyScorer",
    "Pruned",
    "Reporter",
    "SearchBackend",
    "SearchSpace",
    "create_backend",
    "load_proxy_objective",
    "params_from_row",
    "rank_trials",
    "save_proxy_inputs",
    "select_for_validation",
    "server_holdout",
    "simulated_fedavg",
    "split_server_holdout",
    "virtual_clients",
    "virtual_counts",
]
