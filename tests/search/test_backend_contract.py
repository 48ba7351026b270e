"""One contract suite for every SearchBackend (Optuna in-process, NNI subprocess trials).

Each backend searches the tiny ConvNet space on digits with the real proxy objective, passed as
an ObjectiveRecipe (files on disk, as NNI trials need), and must produce the same trial table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from distdd_nas.search.backends import (
    EXTRA_COLUMNS,
    TRIAL_COLUMNS,
    ObjectiveRecipe,
    SearchBackend,
    create_backend,
)
from distdd_nas.search.objective import ProxyObjective
from distdd_nas.search.space import SearchSpace
from distdd_nas.stages.proxy_files import save_proxy_inputs
from tests.search.conftest import REFERENCE

N_TRIALS = 3
BACKENDS = [
    pytest.param("optuna", marks=pytest.mark.timeout(120)),
    pytest.param("nni", marks=[pytest.mark.nni, pytest.mark.timeout(300)]),
]


@pytest.fixture
def recipe(holdout_objective: ProxyObjective, tmp_path: Path) -> ObjectiveRecipe:
    return save_proxy_inputs(tmp_path / "inputs", objective=holdout_objective)


def make(name: str, space: SearchSpace, workdir: Path, seed: int = 0) -> SearchBackend:
    if name == "nni":
        pytest.importorskip("nni")
    return create_backend(
        name,
        space=space,
        storage=None,
        study_name="contract",
        sampler="random",
        pruner="none",
        seed=seed,
        workdir=workdir,
        reference=REFERENCE,
        trial_timeout_s=120,
    )


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_contract(
    name: str, tiny_space: SearchSpace, recipe: ObjectiveRecipe, tmp_path: Path
) -> None:
    backend = make(name, tiny_space, tmp_path / "search")
    table = backend.optimize(recipe, n_trials=N_TRIALS)
    # schema
    assert list(table.columns[: len(TRIAL_COLUMNS)]) == list(TRIAL_COLUMNS)
    params = {f"params_{n}" for n in [*tiny_space.names, *tiny_space.fixed]}
    assert params <= set(table.columns)
    assert set(EXTRA_COLUMNS) <= set(table.columns)
    assert (table["backend"] == name).all()
    assert table["number"].is_unique
    # n_trials finished, the reference first
    done = table[table["state"].isin(["COMPLETE", "PRUNED"])]
    assert len(done) == N_TRIALS
    first = table.sort_values("number").iloc[0]
    assert bool(first["reference"])
    assert {k: first[f"params_{k}"] for k in REFERENCE} == REFERENCE
    assert table["reference"].sum() == 1
    # values: proxy accuracies in [0, 1], with ids and costs
    complete = table[table["state"] == "COMPLETE"]
    assert complete["value"].between(0.0, 1.0).all()
    assert (complete["candidate_id"].str.len() == 10).all()
    assert (complete["num_parameters"] > 0).all()
    assert (complete["duration_s"] >= 0).all()
    if name == "nni":  # the manager and every trial process are gone; NNI's registry is clean
        import psutil
        from nni.tools.nnictl.config_utils import Experiments

        assert psutil.Process().children(recursive=True) == []
        assert not set(table["experiment_id"]) & set(Experiments().get_all_experiments())
    # resumable: asking again for the same number runs nothing and returns the same table
    again = make(name, tiny_space, tmp_path / "search").optimize(recipe, n_trials=N_TRIALS)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), table.reset_index(drop=True))


def test_optuna_same_seed_reproduces(
    tiny_space: SearchSpace, recipe: ObjectiveRecipe, tmp_path: Path
) -> None:
    a = make("optuna", tiny_space, tmp_path / "a", seed=4).optimize(recipe, n_trials=N_TRIALS)
    b = make("optuna", tiny_space, tmp_path / "b", seed=4).optimize(recipe, n_trials=N_TRIALS)
    cols = ["number", "candidate_id", "value", "state"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
