"""Optuna backend: resuming after interruptions and killed workers, samplers, pruning, failures."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from distdd_nas.errors import ConfigError, MissingDependencyError
from distdd_nas.search.backends import Reporter, create_backend
from distdd_nas.search.backends.optuna import OptunaBackend
from distdd_nas.search.backends.optuna_samplers import make_sampler
from distdd_nas.search.space import SearchSpace
from tests.search.conftest import REFERENCE, TINY_SPACE

pytestmark = pytest.mark.timeout(120)

LR_SPACE = {
    "params": {
        "train.lr": {"type": "float", "low": 0.0, "high": 1.0},
        "arch.depth": {"type": "int", "low": 1, "high": 3},
    }
}


def toy(params: Mapping[str, Any], report: Reporter) -> tuple[float, dict[str, Any]]:
    """Deterministic, instant objective: a smooth function of the parameters."""
    value = 1.0 - abs(float(params["train.lr"]) - 0.3) - 0.01 * int(params["arch.depth"])
    return value, {"candidate_id": f"{params['train.lr']:.6f}-{params['arch.depth']}"}


def backend(path: Path, **kw: Any) -> OptunaBackend:
    space = SearchSpace.from_dict(kw.pop("space", LR_SPACE))
    return OptunaBackend(
        space=space,
        storage=kw.pop("storage", f"sqlite:///{path / 'o.db'}"),
        study_name="s",
        sampler=kw.pop("sampler", "tpe"),
        seed=0,
        **kw,
    )


class Interrupting:
    """Counts calls; raises ``exc`` on call number ``at`` (1-based)."""

    def __init__(self, at: int | None, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.at, self.exc, self.calls = at, exc, []  # type: ignore[var-annotated]

    def __call__(
        self, params: Mapping[str, Any], report: Reporter
    ) -> tuple[float, dict[str, Any]]:
        self.calls.append(dict(params))
        if len(self.calls) == self.at:
            raise self.exc()
        return toy(params, report)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupted_search_resumes_without_losing_or_repeating(
    tmp_path: Path, exc: type[BaseException]
) -> None:
    first = Interrupting(at=3, exc=exc)
    with pytest.raises(exc):
        backend(tmp_path).optimize(first, n_trials=6)
    table = backend(tmp_path).trials_frame()
    done = table[table["state"] == "COMPLETE"]
    assert len(done) == 2
    assert (table["state"] == "FAIL").sum() == 1  # the interrupted trial, re-queued
    second = Interrupting(at=None)
    table = backend(tmp_path).optimize(second, n_trials=6)
    assert len(second.calls) == 4  # only the remainder runs
    assert second.calls[0] == first.calls[2]  # the interrupted trial first
    final = table[table["state"] == "COMPLETE"]
    assert len(final) == 6
    assert final.head(2)[["number", "value"]].equals(done[["number", "value"]])
    evaluated = [c for c in first.calls[:2] + second.calls]
    assert len({tuple(sorted(c.items())) for c in evaluated}) == 6  # none evaluated twice
    assert len(backend(tmp_path).optimize(Interrupting(at=1), n_trials=6)) == len(table)


def _killed_worker(db: str) -> None:
    """Child process: run a search whose 3rd evaluation dies like ``kill -9``."""
    calls = []

    def objective(params: Mapping[str, Any], report: Reporter) -> tuple[float, dict[str, Any]]:
        calls.append(params)
        if len(calls) == 3:
            os._exit(9)
        return toy(params, report)

    space = SearchSpace.from_dict(LR_SPACE)
    OptunaBackend(space=space, storage=db, study_name="s", seed=0).optimize(objective, n_trials=5)


def test_killed_worker_leaves_a_trial_that_the_next_run_retries(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'o.db'}"
    proc = multiprocessing.get_context("fork").Process(target=_killed_worker, args=(db,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    before = backend(tmp_path, storage=db).trials_frame()  # recovery ran in the constructor
    assert list(before["state"]) == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]
    assert before["fail_reason"].iloc[2] == "worker died"
    calls: list[dict[str, Any]] = []
    table = backend(tmp_path, storage=db).optimize(
        lambda p, r: (calls.append(dict(p)), toy(p, r))[1], n_trials=5
    )
    assert len(calls) == 3
    assert calls[0]["train.lr"] == before["params_train.lr"].iloc[2]
    assert (table["state"] == "COMPLETE").sum() == 5


def test_reference_is_the_first_trial_once(tmp_path: Path) -> None:
    space = SearchSpace.from_dict(TINY_SPACE)
    objective = Interrupting(at=None)

    def run(n: int) -> Any:
        b = OptunaBackend(
            space=space,
            storage=f"sqlite:///{tmp_path / 'r.db'}",
            study_name="r",
            sampler="random",
            seed=1,
            reference=REFERENCE,
        )
        return b.optimize(lambda p, r: (p["arch.depth"] / 2, {}), n_trials=n)

    table = run(3)
    first = table.sort_values("number").iloc[0]
    assert first["reference"] and first["params_arch.width"] == 8
    assert first["params_arch.family"] == "convnet"  # fixed values are in the table too
    table = run(5)
    assert table["reference"].sum() == 1
    assert objective.calls == []


def test_same_seed_same_trials(tmp_path: Path) -> None:
    tables = []
    for name in ("a", "b"):
        b = OptunaBackend(
            space=SearchSpace.from_dict(LR_SPACE),
            storage="sqlite:///:memory:",
            study_name=name,
            sampler="tpe",
            seed=5,
        )
        tables.append(b.optimize(toy, n_trials=8))
    cols = ["params_train.lr", "params_arch.depth", "value"]
    assert tables[0][cols].equals(tables[1][cols])


def test_journal_storage_resumes(tmp_path: Path) -> None:
    url = f"journal://{tmp_path / 'j' / 'optuna.log'}"
    with pytest.raises(KeyboardInterrupt):
        backend(tmp_path, storage=url).optimize(Interrupting(at=2), n_trials=3)
    table = backend(tmp_path, storage=url).optimize(toy, n_trials=3)
    assert (table["state"] == "COMPLETE").sum() == 3
    assert (tmp_path / "j" / "optuna.log").is_file()


def test_pruned_trials_are_recorded_and_count(tmp_path: Path) -> None:
    def objective(params: Mapping[str, Any], report: Reporter) -> tuple[float, dict[str, Any]]:
        lr = float(params["train.lr"])
        for step in range(1, 4):
            report(step, lr)
        return lr, {}

    table = backend(tmp_path, sampler="random", pruner="median").optimize(objective, n_trials=12)
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert (table["state"] == "PRUNED").sum() >= 1
    assert len(table) == 12
    assert table.loc[table["state"] == "PRUNED", "value"].isna().all()


def test_infeasible_candidates_fail_and_the_search_goes_on(tmp_path: Path) -> None:
    def objective(params: Mapping[str, Any], report: Reporter) -> tuple[float, dict[str, Any]]:
        if int(params["arch.depth"]) == 3:
            raise ConfigError("too deep for 8×8")
        return toy(params, report)

    table = backend(tmp_path, sampler="random").optimize(objective, n_trials=6)
    assert (table["state"] == "COMPLETE").sum() == 6
    failed = table[table["state"] == "FAIL"]
    assert len(failed) >= 1 and (failed["fail_reason"] == "too deep for 8×8").all()

    def broken(params: Mapping[str, Any], report: Reporter) -> tuple[float, dict[str, Any]]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        backend(tmp_path / "b", sampler="random").optimize(broken, n_trials=2)
    assert list(backend(tmp_path / "b").trials_frame()["state"]) == ["FAIL"]


def test_grid_sampler_stops_at_the_grid_size(tmp_path: Path) -> None:
    space = {
        "params": {
            "arch.depth": {"type": "int", "low": 1, "high": 2},
            "arch.act": {"type": "categorical", "choices": ["relu", "sigmoid"]},
        }
    }
    table = backend(tmp_path, space=space, sampler="grid").optimize(
        lambda p, r: (p["arch.depth"] / 2, {}), n_trials=10
    )
    assert len(table) == 4
    assert len(set(zip(table["params_arch.depth"], table["params_arch.act"], strict=True))) == 4


def test_factory_and_configuration_errors(tmp_path: Path) -> None:
    space = SearchSpace.from_dict(LR_SPACE)
    b = create_backend(
        "optuna", space=space, storage=None, study_name="f", workdir=tmp_path, sampler="random"
    )
    assert isinstance(b, OptunaBackend)
    assert (tmp_path / "optuna.db").is_file()
    with pytest.raises(ConfigError, match="unknown search backend 'ray'"):
        create_backend("ray", space=space, storage=None, study_name="f", workdir=tmp_path)
    with pytest.raises(ConfigError, match="unknown sampler 'bayes'"):
        make_sampler("bayes", seed=0, space=space)
    with pytest.raises(ConfigError, match="continuous float"):
        make_sampler("grid", seed=0, space=space)
    with pytest.raises(ConfigError, match="unknown pruner 'asha'"):
        backend(tmp_path, pruner="asha")
    with pytest.raises(ConfigError, match="cannot open search storage 'nosuch://x'"):
        backend(tmp_path, storage="nosuch://x")
    with pytest.raises(ConfigError, match="n_trials=0"):
        backend(tmp_path).optimize(toy, n_trials=0)
    assert make_sampler("gp", seed=0, space=space) is not None
    try:
        import cmaes  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install cmaes"):
            make_sampler("cmaes", seed=0, space=space)


def test_trial_orphaned_between_ask_and_worker_record_is_retried(tmp_path: Path) -> None:
    b = backend(tmp_path)
    b.optimize(toy, n_trials=2)
    orphan = b.study.ask(b.space.to_optuna())  # a process that died right after asking
    table = backend(tmp_path).optimize(toy, n_trials=3)
    row = table.set_index("number").loc[orphan.number]
    assert row["state"] == "FAIL" and row["fail_reason"] == "worker died"
    retried = table[table["params_train.lr"] == orphan.params["train.lr"]]
    assert list(retried["state"]) == ["FAIL", "COMPLETE"]
    assert (table["state"] == "COMPLETE").sum() == 3
