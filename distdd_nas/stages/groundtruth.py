"""Stage ``groundtruth``: real FedAvg curves of sampled candidates, resumable after a kill.

Writes ``DIR/groundtruth/``: ``plan.json`` (settings and fingerprint, first), ``candidates.csv``
(one row per sampled candidate), ``curves.csv`` (one row per candidate, replicate and round,
appended one whole FedAvg training at a time) and, once every unit is trained, ``summary.json``
and ``manifest.json``. Re-running the command continues where a killed run stopped; a directory
made under other settings is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from distdd_nas.artifacts import AppendTable, load_json, stage_in_place, write_atomic
from distdd_nas.config import StudyConfig
from distdd_nas.errors import ArtifactError, ConfigError
from distdd_nas.evidence.groundtruth import (
    CURVE_COLUMNS,
    GroundTruthPlan,
    candidate_table,
    sample_candidates,
    train_unit,
)
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.rank_metrics import kendall_tau
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


def table_identity(study: Study, plan: GroundTruthPlan) -> dict[str, Any]:
    """Everything the rows depend on, as JSON: the federation sections, client sampling, what
    each unit trains (architecture and resolved FedAvg settings at the table's rounds), seeds
    and the thread count (float rounding differs with it). Proxy-training settings are not in
    it: they change candidate ids, not FedAvg curves, so rows keep the ids the table gave them.
    """
    base = study.fedavg_settings
    full = study.config.to_dict()
    fed = study.config.federation
    trains = [
        {
            "arch": c.arch.to_dict(),
            "fedavg": _fedavg_identity(
                replace(c.fedavg_settings(base), rounds=plan.rounds, eval_every=1)
            ),
        }
        for c in plan.candidates
    ]
    return {
        **{name: full[name] for name in SECTIONS},
        "seed": plan.seed,
        "rounds": plan.rounds,
        "replicates": plan.replicates,
        "threads": torch.get_num_threads(),
        "fraction": fed.fraction,
        "failure_rate": fed.failure_rate,
        "trains": trains,
        **_faults(study),
    }


def _fedavg_identity(settings: FedAvgSettings) -> dict[str, Any]:
    """A unit's FedAvg settings as JSON, local training by :meth:`TrainSettings.identity`."""
    return {**asdict(settings), "local": settings.local.identity()}


def _faults(study: Study) -> dict[str, Any]:
    """The Byzantine and quorum settings, only where they differ from the defaults (so tables
    measured before these settings existed keep their identity)."""
    fed = study.config.federation
    defaults = type(fed)()
    keys = (
        "byzantine_fraction",
        "byzantine_kind",
        "byzantine_scale",
        "min_replies",
        "round_retries",
    )
    return {k: getattr(fed, k) for k in keys if getattr(fed, k) != getattr(defaults, k)}


def table_fingerprint(identity: dict[str, Any]) -> str:
    """Short hash of :func:`table_identity`."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    k, n = shard
    if not 0 <= k < n:
        raise ConfigError(f"shard {k}/{n} is out of range; use K/N with 0 <= K < N")
    if config.federation.engine != "inprocess":
        raise ConfigError(
            "groundtruth trains in-process only (its curves are the reference the Flower engines "
            'are tested against); set federation.engine="inprocess"'
        )
    plan = plan_for(study)
    path = out / "groundtruth"
    identity = table_identity(study, plan)
    fp = table_fingerprint(identity)
    _claim(path, fp, identity, config)
    fed = study.federation
    if not (path / "candidates.csv").exists():
        table = candidate_table(
            plan.candidates, num_parameters=lambda c: study.num_parameters(c.arch)
        )
        write_atomic(path / "candidates.csv", table.to_csv(index=False, lineterminator="\n"))
    keys = pd.read_csv(path / "candidates.csv", dtype={"candidate_id": str})[
        "candidate_id"
    ].tolist()
    curves_file = AppendTable(path / "curves.csv", CURVE_COLUMNS, text=("candidate_id",))
    done = _units_in(_whole_units(curves_file, plan.rounds))
    units = [replace(u, key=keys[u.index]) for u in plan.units()]
    for i, unit in enumerate(units):
        if i % n != k or (unit.candidate_id, unit.replicate) in done:
            continue
        engine = study.make_engine()
        try:
            rows = train_unit(
                engine,
                unit,
                test=fed.test,
                base=study.fedavg_settings,
                rounds=plan.rounds,
                quorum=study.quorum,
            )
        finally:
            engine.close()
        curves_file.append(rows)
        if progress is not None:
            last = {"test_accuracy": float(rows["test_accuracy"].iloc[-1])}
            progress("groundtruth", i + 1, len(units), last)
    curves = _whole_units(curves_file, plan.rounds)
    finished = len(_units_in(curves))
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


def _claim(path: Path, fp: str, identity: dict[str, Any], config: StudyConfig) -> None:
    """Create ``path`` with ``plan.json``, or check an existing one was made with ``fp``
    (naming what differs, so a user knows which setting to restore)."""
    plan_file = path / "plan.json"
    if plan_file.exists():
        plan = load_json(plan_file)
        if plan.get("fingerprint") != fp:
            stored = plan.get("identity", {})
            differ = sorted(k for k in identity if stored.get(k) != identity[k]) or ["settings"]
            raise ArtifactError(
                f"{path} holds a ground truth made under other {', '.join(differ)} "
                f"(fingerprint {plan.get('fingerprint')}, now {fp}; threads: use the --threads "
                "it was made with); restore them, use another --out, or delete that directory"
            )
        return
    path.mkdir(parents=True, exist_ok=True)
    plan = {"fingerprint": fp, "identity": identity, "config": config.to_dict()}
    write_atomic(plan_file, json.dumps(plan, indent=2, sort_keys=True) + "\n")


def _whole(curves: pd.DataFrame, rounds: int) -> pd.DataFrame:
    """Rows of whole curves only: a unit's rows 1..``rounds`` (a unit written twice keeps its
    first curve; a unit a killed writer left incomplete is left out)."""
    once = curves.drop_duplicates(["candidate_id", "replicate", "round"], keep="first")
    size = once.groupby(["candidate_id", "replicate"])["round"].transform("size")
    return once[size == rounds].reset_index(drop=True)


def _whole_units(table: AppendTable, rounds: int) -> pd.DataFrame:
    """The table's whole curves; inside one lock, the file is cut down to them (an incomplete
    unit is trained again)."""
    return table.keep(lambda curves: _whole(curves, rounds))


@dataclass(frozen=True)
class GroundTruthTable:
    """A ground-truth directory as read: its plan's settings, every listed candidate, the
    whole curves of the replicates in use, and the candidates for which each of those is
    complete (in sample order).

    ``truth`` is the replicate candidates are judged by; ``observe`` the one cheap FedAvg
    baselines (a few rounds, successive halving) see — another seed where the table has one,
    so they do not share the truth's seed luck; the same one in a one-replicate table.
    """

    candidates: pd.DataFrame
    curves: pd.DataFrame
    rounds: int
    replicates: int
    config: dict[str, Any]
    listed: pd.DataFrame
    truth: int = 0
    observe: int = 1


def read_table(table_dir: Path, *, replicates: Sequence[int] | None = None) -> GroundTruthTable:
    """Read ``table_dir/groundtruth/`` without writing to it (a table may still be growing).

    ``replicates`` (default: every replicate of the plan) are the ones in use: a candidate
    counts once each of them is complete, the first is the truth and the second what cheap
    FedAvg baselines observe — so a growing table can be read on one seed for every candidate
    before the second seed is in.

    Raises:
        ArtifactError: No ``plan.json`` there, or a replicate the plan does not have.
    """
    gt = table_dir / "groundtruth"
    if not (gt / "plan.json").exists():
        raise ArtifactError(f"{gt} holds no plan.json; pass the directory given to --out")
    config = load_json(gt / "plan.json")["config"]
    g = config["groundtruth"]
    rounds = int(g["rounds"] if g.get("rounds") is not None else config["fedavg"]["rounds"])
    planned = int(g["replicates"])
    use = tuple(dict.fromkeys(replicates)) if replicates is not None else tuple(range(planned))
    if not use or any(not 0 <= r < planned for r in use):
        raise ArtifactError(
            f"{gt} has replicates 0..{planned - 1}; choose among them (got {list(use)})"
        )
    listed = pd.read_csv(gt / "candidates.csv", dtype={"candidate_id": str})
    listed = listed.sort_values("index").reset_index(drop=True)
    raw = AppendTable(gt / "curves.csv", CURVE_COLUMNS, text=("candidate_id",))
    curves = _whole(raw.read(repair=False), rounds)
    curves = curves[curves["replicate"].isin(use)].reset_index(drop=True)
    per = curves.groupby("candidate_id")["replicate"].nunique()
    done = set(per[per == len(use)].index)
    complete = listed[listed["candidate_id"].isin(done)].reset_index(drop=True)
    return GroundTruthTable(
        complete,
        curves,
        rounds,
        len(use),
        config,
        listed,
        truth=use[0],
        observe=use[min(1, len(use) - 1)],
    )


def parse_replicates(text: str) -> tuple[int, ...]:
    """``"1"`` or ``"0,1"`` (a command-line list of replicates, truth first) as a tuple.

    Raises:
        ValueError: Not a comma-separated list of non-negative integers.
    """
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a list of replicates, e.g. 1 or 0,1")
    return tuple(int(p) for p in parts)


def _units_in(curves: pd.DataFrame) -> set[tuple[str, int]]:
    """(candidate_id, replicate) pairs present in ``curves``."""
    return {
        (str(c), int(r)) for c, r in zip(curves["candidate_id"], curves["replicate"], strict=True)
    }
