"""Stage ``search``: an Optuna (or NNI) study on the distilled set; resumable; ``DIR/search/``.

The Optuna storage persists across runs, so re-running ``search`` (or ``run``) continues the same
study and never repeats or loses a finished trial; ``trials.csv`` and ``summary.json`` are
replaced atomically at the end, the manifest last.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from distdd_nas.artifacts import stage_in_place
from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.search.backends import create_backend
from distdd_nas.search.backends.optuna_views import name_metric
from distdd_nas.search.fedavg_objective import (
    CurveObjective,
    FedAvgObjective,
    require_fedavg_search,
)
from distdd_nas.search.objective import ProxyObjective, ProxyScorer, split_server_holdout
from distdd_nas.stages.common import (
    FEDAVG_SECTIONS,
    Progress,
    StageOutcome,
    distilled_fingerprint,
    write_config,
)
from distdd_nas.stages.distill import ensure_distilled, load_distilled
from distdd_nas.stages.proxy_files import save_proxy_inputs
from distdd_nas.study import Study

#: Search settings that define *which* study a trial belongs to (not how many trials to run).
SEARCH_IDENTITY = (
    "space",
    "scoring",
    "epochs",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "sampler",
    "pruner",
    "backend",
    "objective",
    "seeds_per_trial",
    "holdout_fraction",
    "virtual_examples",
    "virtual_steps",
    "augment",
)


def search_identity(config: StudyConfig) -> dict[str, Any]:
    """The search settings that identify a study's search (settings at a default the config
    leaves out of its dumps stay out, so adding such a setting keeps every fingerprint)."""
    dumped = config.search.model_dump(mode="json")
    return {k: dumped[k] for k in SEARCH_IDENTITY if k in dumped}


def search_fingerprint(config: StudyConfig) -> str:
    """Fingerprint of the distilled set plus the search settings that identify the study."""
    identity = search_identity(config)
    if config.search.objective == "fedavg":
        return fingerprint(config, FEDAVG_SECTIONS, extra=identity)
    return distilled_fingerprint(config, extra=identity)


def fedavg_objective(study: Study) -> FedAvgObjective:
    """The FedAvg-based search's objective: real FedAvg of each candidate on the clients.

    Raises:
        ConfigError: See :func:`~distdd_nas.search.fedavg_objective.require_fedavg_search`.
    """
    require_fedavg_search(
        backend=study.config.search.backend, engine=study.config.federation.engine
    )
    return FedAvgObjective(
        make_engine=study.make_engine,
        candidates=study.candidates,
        test=study.validation_test,
        base=study.fedavg_settings,
        seed=study.config.study.seed,
        quorum=study.quorum,
    )


def make_objective(study: Study, distilled_path: Path, search_dir: Path) -> Any:
    """The proxy objective on the distilled set (for NNI: a recipe its trial processes load)."""
    config, fed = study.config, study.federation
    sc = config.search
    counts = pd.read_csv(distilled_path / "class_counts.csv").drop(columns="client").to_numpy()
    holdout, _ = split_server_holdout(
        fed.test, seed=config.study.seed, fraction=sc.holdout_fraction
    )
    scorer = ProxyScorer(
        distilled=load_distilled(distilled_path),
        like=fed.train,
        scoring=sc.scoring,
        holdout=holdout if sc.scoring == "server_holdout" else None,
        engine=study.make_engine() if sc.scoring == "federated" else None,
        client_class_counts=counts,
        fedavg=study.fedavg_settings,
        seed=config.study.seed,
        seeds=sc.seeds_per_trial,
        virtual_examples=sc.virtual_examples,
        virtual_steps=sc.virtual_steps,
        intermediate=sc.pruner != "none",
    )
    objective = ProxyObjective(scorer=scorer, candidates=study.candidates)
    if sc.backend == "nni":  # NNI trials run in subprocesses: they rebuild it from files
        return save_proxy_inputs(
            search_dir / "nni" / "inputs", objective=objective, study_config=config.to_dict()
        )
    return objective


def make_backend(study: Study, *, storage: str, study_name: str, workdir: Path) -> Any:
    """The study's search backend (sampler, pruner, seed, reference enqueued first)."""
    sc = study.config.search
    return create_backend(
        sc.backend,
        space=study.space,
        storage=storage,
        study_name=study_name,
        sampler=sc.sampler,
        pruner=sc.pruner,
        seed=study.config.study.seed,
        workdir=workdir,
        reference=study.space.point(study.candidates.reference_values(study.fedavg_settings)),
        trial_timeout_s=sc.trial_timeout_s,
        concurrency=sc.concurrency,
    )


def replay_fedavg_search(
    study: Study, curves: pd.DataFrame, *, replicate: int, workdir: Path
) -> pd.DataFrame:
    """The study's FedAvg-based search replayed on ground-truth ``curves`` (no training): the
    same backend, sampler, pruner, seed and study name (Hyperband picks a trial's bracket from
    it), observing replicate ``replicate``'s curves. On the replicate the real search trains
    (0: the study seed) it makes the same decisions as an uninterrupted real run, so its trial
    table (states, rounds, bytes) equals that run's (a resumed real run reseeds its sampler)."""
    objective = CurveObjective(
        curves=curves,
        candidates=study.candidates,
        replicate=replicate,
        rounds=study.fedavg_settings.rounds,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"{study.config.study.name}-{search_fingerprint(study.config)}"
    backend = make_backend(
        study,
        storage=f"sqlite:///{(workdir / f'replay-{replicate}.db').resolve()}",
        study_name=name,
        workdir=workdir,
    )
    return backend.optimize(objective, n_trials=study.config.search.n_trials)


def _best(values: list[float]) -> dict[str, float]:
    return {"best": max(values)} if values else {}


def run_search_stage(
    study: Study, out: Path, *, cache: Path, progress: Progress | None = None
) -> StageOutcome:
    """Optuna (or NNI) search on the distilled set, or with real FedAvg per candidate
    (``search.objective``); resumable; writes ``DIR/search/``."""
    start = time.perf_counter()
    config = study.config
    sc = config.search
    space = study.space
    search_dir = out / "search"
    if sc.objective == "fedavg":
        objective: Any = fedavg_objective(study)
    else:
        distilled_path = ensure_distilled(study, cache)
        search_dir.mkdir(parents=True, exist_ok=True)
        objective = make_objective(study, distilled_path, search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)  # (the FedAvg search needs no distilled set)
    storage = sc.storage or f"sqlite:///{(search_dir / 'optuna.db').resolve()}"
    study_name = f"{config.study.name}-{search_fingerprint(config)}"
    backend = make_backend(study, storage=storage, study_name=study_name, workdir=search_dir)
    before = backend.trials_frame()  # a resumed study starts where it stopped
    before = before[before["state"].isin(["COMPLETE", "PRUNED"])]
    seen: list[float] = [float(v) for v in before["value"].dropna()]
    done = [len(before)]
    if progress is not None:
        progress("search", min(done[0], sc.n_trials), sc.n_trials, _best(seen))

    def on_trial(row: dict[str, Any]) -> None:
        value = row.get("value")
        if row.get("state") in ("COMPLETE", "PRUNED"):
            done[0] += 1
            if isinstance(value, int | float) and not math.isnan(value):
                seen.append(float(value))
        if progress is not None:
            progress("search", min(done[0], sc.n_trials), sc.n_trials, _best(seen))

    if sc.backend == "optuna":
        metric = "fedavg_accuracy" if sc.objective == "fedavg" else "proxy_score"
        name_metric(storage, study_name, metric)
    trials = backend.optimize(
        objective, n_trials=sc.n_trials, timeout_s=sc.timeout_s, callback=on_trial
    )
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
    summary = {
        "backend": sc.backend,
        "space": space.name,
        "space_size": space.size,
        "study_name": study_name,
        "storage": storage,
        "n_trials": len(finished),
        "n_complete": int((trials["state"] == "COMPLETE").sum()),
        "best_value": float(finished["value"].max()) if len(finished) else float("nan"),
        "bytes_up": int(trials["bytes_up"].sum()),
        "bytes_down": int(trials["bytes_down"].sum()),
        "trials_wall_s": float(finished["duration_s"].sum()),
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    with stage_in_place(search_dir, fingerprint=search_fingerprint(config)) as w:
        w.csv("trials.csv", trials)
        w.json("summary.json", summary)
    return StageOutcome(search_dir, summary)
