"""Stage ``groundtruth``: real FedAvg curves of sampled candidates, resumable after a kill.

Writes ``DIR/groundtruth/``: ``plan.json`` (settings and fingerprint, first), ``candidates.csv``
(one row per sampled candidate), ``curves.csv`` (one row per candidate, replicate and round,
appended one whole FedAvg training at a time) and, once every unit is trained, ``summary.json``
and ``manifest.json``. Re-running the command continues where a killed run stopped; a directory
made under other settings is refused rather than mixed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from distdd_nas.artifacts import AppendTable, load_json, stage_in_place, write_atomic
from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.errors import ArtifactError, ConfigError
from distdd_nas.evidence.groundtruth import (
    CURVE_COLUMNS,
    GroundTruthPlan,
    candidate_table,
    sample_candidates,
    train_unit,
)
from distdd_nas.report.metrics import kendall_tau
from distdd_nas.stages.common import Progress, StageOutcome, write_config
from distdd_nas.study import Study

#: Sections that shape the federation the table is measured on.
SECTIONS = ("data", "partition", "noise")


def plan_for(study: Study) -> GroundTruthPlan:
    """The study's ground-truth plan: candidates sampled from its space, reference first."""
    g = study.config.groundtruth
    factory = study.candidates
    point = study.space.point(factory.reference_values(study.fedavg_settings))
    reference = factory({**study.space.fixed, **point}) if point is not None else factory({})
    candidates = sample_candidates(
        study.space, factory, n=g.candidates, seed=g.sample_seed, reference=reference
    )
    rounds = g.rounds if g.rounds is not None else study.config.fedavg.rounds
    return GroundTruthPlan(
        candidates, replicates=g.replicates, rounds=rounds, seed=study.config.study.seed
    )


def table_fingerprint(study: Study, plan: GroundTruthPlan) -> str:
    """What the rows depend on: the federation, client sampling, each candidate's resolved
    FedAvg settings, rounds and seeds (not unrelated settings, so a table outlives them)."""
    base = study.fedavg_settings
    units = [(c.candidate_id, asdict(c.fedavg_settings(base))) for c in plan.candidates]
    fed = study.config.federation
    threads = torch.get_num_threads()  # float rounding differs with the thread count
    return fingerprint(
        study.config,
        SECTIONS,
        extra={
            "seed": plan.seed,
            "rounds": plan.rounds,
            "replicates": plan.replicates,
            "threads": threads,
            "fraction": fed.fraction,
            "failure_rate": fed.failure_rate,
            "units": units,
        },
    )


def seed_vs_seed_tau(curves: pd.DataFrame, *, round: int) -> float:
    """Kendall τ between replicates 0 and 1 of the accuracy at ``round`` (NaN without both)."""
    at = curves[curves["round"] == round].pivot_table(
        index="candidate_id", columns="replicate", values="test_accuracy"
    )
    if 0 not in at.columns or 1 not in at.columns:
        return float("nan")
    both = at[[0, 1]].dropna()
    return kendall_tau(both[0].to_numpy(), both[1].to_numpy())


def run_groundtruth_stage(
    study: Study, out: Path, *, progress: Progress | None = None, shard: tuple[int, int] = (0, 1)
) -> StageOutcome:
    """Train every (candidate, replicate) of the plan not yet in ``curves.csv``; summarise.

    ``shard = (k, n)``: this process trains only units ``k, k + n, k + 2n, ...``, so ``n``
    processes (one thread each) share one table; whichever finds the table whole writes the
    summary and the manifest.
    """
    config: StudyConfig = study.config
    start = time.perf_counter()
    plan = plan_for(study)
    path = out / "groundtruth"
    fp = table_fingerprint(study, plan)
    _claim(path, fp, config)
    fed = study.federation
    table = candidate_table(plan.candidates, num_parameters=lambda c: study.num_parameters(c.arch))
    curves_file = AppendTable(path / "curves.csv", CURVE_COLUMNS)
    done = _finished_units(curves_file, plan.rounds)
    if not (path / "candidates.csv").exists():
        write_atomic(path / "candidates.csv", table.to_csv(index=False, lineterminator="\n"))
    units = list(plan.units())
    k, n = shard
    if not 0 <= k < n:
        raise ConfigError(f"shard {k}/{n} is out of range; use K/N with 0 <= K < N")
    for i, unit in enumerate(units):
        if i % n != k or (unit.candidate.candidate_id, unit.replicate) in done:
            continue
        engine = study.make_engine()
        try:
            rows = train_unit(
                engine, unit, test=fed.test, base=study.fedavg_settings, rounds=plan.rounds
            )
        finally:
            engine.close()
        curves_file.append(rows)
        if progress is not None:
            progress(i + 1, len(units), {"test_accuracy": float(rows["test_accuracy"].iloc[-1])})
    curves = curves_file.read()
    finished = len(_finished_units(curves_file, plan.rounds))
    if finished < len(units):  # other shards are still training
        return StageOutcome(path, {"units": len(units), "finished": finished})
    last = curves[curves["round"] == plan.rounds]
    summary = {
        "candidates": len(plan.candidates),
        "replicates": plan.replicates,
        "rounds": plan.rounds,
        "units": len(units),
        "seed_vs_seed_kendall_tau": seed_vs_seed_tau(curves, round=plan.rounds),
        "best_mean_accuracy": float(last.groupby("candidate_id")["test_accuracy"].mean().max()),
        "bytes_total": int(last["bytes_up"].sum() + last["bytes_down"].sum()),
        "train_wall_s_total": float(last["wall_s"].sum()),
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    with stage_in_place(
        path, fingerprint=fp, meta={"appended": ["candidates.csv", "curves.csv", "plan.json"]}
    ) as w:
        w.json("summary.json", summary)
    return StageOutcome(path, summary)


def _claim(path: Path, fp: str, config: StudyConfig) -> None:
    """Create ``path`` with ``plan.json``, or check an existing one was made with ``fp``."""
    plan_file = path / "plan.json"
    if plan_file.exists():
        found = load_json(plan_file).get("fingerprint")
        if found != fp:
            raise ArtifactError(
                f"{path} holds a ground truth made under other settings (fingerprint {found}, "
                f"now {fp}); use another --out or delete that directory"
            )
        return
    path.mkdir(parents=True, exist_ok=True)
    plan = {"fingerprint": fp, "config": config.to_dict()}
    write_atomic(plan_file, json.dumps(plan, indent=2, sort_keys=True) + "\n")


def _finished_units(table: AppendTable, rounds: int) -> set[tuple[str, int]]:
    """(candidate_id, replicate) pairs whose whole curve is in the table; rows of a unit a
    killed writer left incomplete are dropped from the table (it is trained again)."""
    curves = table.read()
    if curves.empty:
        return set()
    counts = curves.groupby(["candidate_id", "replicate"])["round"].transform("size")
    if (counts != rounds).any():
        table.rewrite(curves[counts == rounds].reset_index(drop=True))
    whole = curves[counts == rounds]
    return {(str(c), int(r)) for c, r in zip(whole["candidate_id"], whole["replicate"])}
