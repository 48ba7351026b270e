"""Stage ``validate``: real FedAvg on the proxy's top-k plus seeded random controls.

Each selected candidate is rebuilt through the study's candidate factory (the network FedAvg
trains is exactly the one the proxy scored) and trained on a fresh in-process engine, so its
bytes are its own. A finished validation of the same trials and settings is reused, and so is
each finished candidate of an interrupted one: its row and ledger go to
``DIR/.validate-progress/<fingerprint>/`` as soon as it is trained (atomic files; the row is
written last, so a row means the candidate is done), and a rerun trains only the others.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from distdd_nas.artifacts import is_complete, load_json, read_manifest, stage, verify, write_atomic
from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.errors import ArtifactError
from distdd_nas.evidence.statistics import tau_interval as bootstrap_tau
from distdd_nas.fedavg import FedAvgSettings, run_fedavg
from distdd_nas.report.metrics import ranking_metrics
from distdd_nas.search.backends.optuna_views import VALIDATION_SUFFIX, publish_validation
from distdd_nas.search.candidate import PARAM_PREFIX, params_from_row
from distdd_nas.search.ranking import rank_trials, select_for_validation
from distdd_nas.seeding import derive_seed
from distdd_nas.stages.common import (
    VALIDATE_SECTIONS,
    Progress,
    StageOutcome,
    distilled_fingerprint,
)
from distdd_nas.stages.search import search_fingerprint
from distdd_nas.study import Study


def read_trials(out: Path, config: StudyConfig) -> pd.DataFrame:
    """The finished search's trial table of a run directory, checked against its manifest
    (SHA-256 of every file) and made under this study's search settings.

    Raises:
        ArtifactError: No finished search, a file changed since it was written, or a search
            made under other settings (its fingerprint differs).
    """
    path = out / "search"
    if not is_complete(path):
        raise ArtifactError(
            f"{path} holds no finished search; run 'distdd-nas search' for this study first"
        )
    verify(path)
    made, expected = (read_manifest(path) or {}).get("fingerprint"), search_fingerprint(config)
    if made != expected:
        raise ArtifactError(
            f"{path} was made under other settings (fingerprint {made}, this study's is "
            f"{expected}); re-run 'distdd-nas search' with this study and these --set options"
        )
    return pd.read_csv(path / "trials.csv")


def tau_interval(table: pd.DataFrame, *, seed: int) -> dict[str, float]:
    """Kendall τ's 90 % percentile-bootstrap interval over the validated candidates (with so
    few candidates it is wide; the report prints it beside τ and n)."""
    if len(table) < 2:
        return {"kendall_tau_low": float("nan"), "kendall_tau_high": float("nan")}
    tau = bootstrap_tau(table["proxy_score"], table["fedavg_accuracy"], seed=seed, boot=2000)
    return {"kendall_tau_low": tau.low, "kendall_tau_high": tau.high}


def run_validate_stage(
    study: Study, out: Path, *, progress: Progress | None = None
) -> StageOutcome:
    """Train the selection with FedAvg; write validation.csv, ranking.csv, ledger, summary."""
    start = time.perf_counter()
    config = study.config
    trials = read_trials(out, config)
    fp = fingerprint(
        config, VALIDATE_SECTIONS, extra=[distilled_fingerprint(config), trials.to_json()]
    )
    if is_complete(out / "validate", fp):  # same trials, same settings: FedAvg already done
        summary = load_json(out / "validate" / "summary.json")
        return StageOutcome(out / "validate", {**summary, "cache_hit": True})
    ranking = rank_trials(trials)
    v = config.validate_
    selection = select_for_validation(
        ranking,
        top_k=v.top_k,
        n_random=v.n_random,
        seed=derive_seed(config.study.seed, "validate"),
        reference=v.reference,
    )
    base = study.fedavg_settings
    if v.rounds is not None:
        base = replace(base, rounds=v.rounds)
    progress_dir = out / ".validate-progress" / fp
    progress_dir.mkdir(parents=True, exist_ok=True)
    rows, ledgers = [], []
    if progress is not None:
        progress("validate", 0, len(selection), {})
    for i, row in selection.iterrows():
        record, ledger = _validated(study, row, base=base, progress_dir=progress_dir)
        rows.append(record)
        ledgers.append(ledger)
        if progress is not None:
            info = {"test_accuracy": record["fedavg_accuracy"]}
            progress("validate", int(i) + 1, len(selection), info)
    table = pd.DataFrame(rows)
    summary = {
        "n_validated": len(table),
        "top_k": v.top_k,
        "n_random": v.n_random,
        "rounds": int(table["rounds"].iloc[0]),
        **ranking_metrics(table, top_k=v.top_k),
        **tau_interval(table, seed=config.study.seed),
        "bytes_up": int(table["bytes_up"].sum()),
        "bytes_down": int(table["bytes_down"].sum()),
        "wall_s": time.perf_counter() - start,
    }
    search = load_json(out / "search" / "summary.json")
    if config.search.backend == "optuna":
        summary["validation_study"] = search["study_name"] + VALIDATION_SUFFIX
    with stage(out / "validate", fingerprint=fp) as w:
        w.csv("validation.csv", table)
        w.csv("ranking.csv", ranking)
        w.csv("ledger.csv", pd.concat(ledgers, ignore_index=True))
        w.json("summary.json", summary)
    shutil.rmtree(out / ".validate-progress", ignore_errors=True)
    if config.search.backend == "optuna":  # a view for Optuna's tools, after the stage is safe
        publish_validation(search["storage"], search["study_name"], table, study.space)
    return StageOutcome(out / "validate", summary)


def _validated(
    study: Study, row: pd.Series, *, base: FedAvgSettings, progress_dir: Path
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One selected candidate's validation row and ledger: read back if an interrupted run
    finished it (``progress_dir``), else trained with FedAvg and written there (ledger first,
    row last, each atomically, so a row on disk means the candidate is done)."""
    candidate = study.candidates.from_row(row.to_dict())
    done = progress_dir / f"{candidate.candidate_id}.json"
    ledger_file = progress_dir / f"{candidate.candidate_id}.ledger.csv"
    if done.exists():
        dtypes = {"candidate_id": str, "kind": str, "direction": str}
        return load_json(done), pd.read_csv(ledger_file, dtype=dtypes)
    engine = study.make_engine()
    settings = candidate.fedavg_settings(base)
    result = run_fedavg(
        engine,
        arch=candidate.arch,
        test=study.validation_test,
        # Only the final accuracy is kept: evaluating every round would cost a test-set pass
        # per round (a fifth of a ConvNet-32 round at two threads) for a curve nothing reads.
        settings=replace(settings, eval_every=settings.rounds),
        seed=study.config.study.seed,
        quorum=study.quorum,
    )
    record = {
        "candidate_id": candidate.candidate_id,
        "selected_as": row["selected_as"],
        "proxy_rank": int(row["proxy_rank"]),
        "number": int(row["number"]),
        "proxy_score": float(row["value"]),
        "fedavg_accuracy": result.test_accuracy,
        "model": candidate.arch.short_name(),
        "num_parameters": study.num_parameters(candidate.arch),
        "rounds": result.rounds,
        "bytes_up": engine.ledger.bytes_up,
        "bytes_down": engine.ledger.bytes_down,
        "wall_s": result.wall_s,
        "reference": bool(row.get("reference", False)),
        **{f"{PARAM_PREFIX}{k}": v for k, v in params_from_row(row.to_dict()).items()},
    }
    ledger = engine.ledger.to_frame().assign(candidate_id=candidate.candidate_id)
    write_atomic(ledger_file, ledger.to_csv(index=False, lineterminator="\n"))
    write_atomic(done, json.dumps(record, default=lambda x: x.item()))  # numpy scalars
    return record, ledger
