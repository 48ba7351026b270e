"""What Optuna's own tools (``optuna-dashboard``, ``optuna.visualization``) read from a search's
storage beyond the trials the search ran: metric names, and a companion study holding the
validated candidates' *real FedAvg* accuracy.

Optuna never lets a finished trial change (``set_user_attr`` on a COMPLETE trial raises), so the
real accuracy cannot be written back onto the search's trials; instead each validation writes
a study ``<search study>-validation`` in the same storage, one COMPLETE trial per validated
candidate with the same parameters and distributions, value = real FedAvg accuracy (metric
``fedavg_accuracy``), user attributes = candidate id, proxy score and rank, how it was selected,
bytes, rounds and the search trial it came from. Plotting that study's parameter importances or
slices shows what FedAvg thinks of the searched parameters; the search study's user attribute
``validation_study`` points to it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
import pandas as pd

from distdd_nas.search.backends.optuna_storage import make_storage
from distdd_nas.search.candidate import params_from_row
from distdd_nas.search.space import SearchSpace

#: Suffix of the companion study holding real FedAvg accuracies.
VALIDATION_SUFFIX = "-validation"

#: Validation columns copied onto each companion trial as user attributes.
ATTRS = (
    "candidate_id",
    "selected_as",
    "proxy_rank",
    "proxy_score",
    "model",
    "num_parameters",
    "rounds",
    "bytes_up",
    "bytes_down",
    "wall_s",
    "reference",
    "number",
)


def name_metric(storage: str, study_name: str, metric: str) -> None:
    """Name the objective of an existing study (the dashboard labels its axis with it)."""
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    if study.metric_names != [metric]:
        _set_metric_names(study, [metric])


def _set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """``Study.set_metric_names`` without its ExperimentalWarning (stable since Optuna 3.2 in
    practice; the dashboard reads it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def publish_validation(
    storage: str, study_name: str, validation: pd.DataFrame, space: SearchSpace
) -> str:
    """Write (replacing any earlier one) the companion study of ``study_name`` holding one
    trial per row of ``validation`` (its ``params_*`` columns, ``fedavg_accuracy``); returns
    its name. Parameters outside the space's distributions are kept as a user attribute."""
    name = study_name + VALIDATION_SUFFIX
    url = make_storage(storage)
    if name in optuna.get_all_study_names(storage=url):
        optuna.delete_study(study_name=name, storage=url)
    companion = optuna.create_study(study_name=name, storage=url, direction="maximize")
    _set_metric_names(companion, ["fedavg_accuracy"])
    companion.set_user_attr("search_study", study_name)
    distributions = space.to_optuna()
    for _, row in validation.iterrows():
        params = {k: v for k, v in params_from_row(row.to_dict()).items() if k in distributions}
        attrs = {k: _plain(row[k]) for k in ATTRS if k in row.index}
        try:
            trial = optuna.trial.create_trial(
                params=params,
                distributions={k: distributions[k] for k in params},
                value=float(row["fedavg_accuracy"]),
                user_attrs=attrs,
            )
        except ValueError:  # a value outside its distribution (e.g. a fixed reference value)
            trial = optuna.trial.create_trial(
                value=float(row["fedavg_accuracy"]), user_attrs={**attrs, "params": params}
            )
        companion.add_trial(trial)
    search = optuna.load_study(study_name=study_name, storage=url)
    search.set_user_attr("validation_study", name)
    return name


__all__ = ["VALIDATION_SUFFIX", "name_metric", "publish_validation"]
