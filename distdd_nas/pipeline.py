"""The table of contents of a study: :func:`run_all` chains the stages; :func:`inspect_run`
reads a run directory back.

Each stage lives in its own file under :mod:`distdd_nas.stages` and takes a
:class:`~distdd_nas.study.Study`, built once per process, so a ``run`` loads, partitions and
noises the data once. Layout of a run directory::

    runs/<study>/config.json          resolved configuration (with its fingerprint)
    runs/<study>/partition/           summary.json, class_counts.csv, noise.csv
    runs/<study>/fedavg/              summary.json, history.csv, ledger.csv
    runs/<study>/distill/             summary.json, history.csv, ledger.csv (set in the cache)
    runs/<study>/search/              optuna.db, trials.csv, summary.json
    runs/<study>/validate/            validation.csv, ranking.csv, ledger.csv, summary.json
    runs/<study>/report/              report.md, summary.json, tables, figures
    runs/<study>/groundtruth/         candidates.csv, curves.csv, summary.json
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distdd_nas.artifacts import is_complete, load_json
from distdd_nas.errors import ArtifactError, ConfigError
from distdd_nas.stages.common import Progress, StageOutcome
from distdd_nas.stages.distill import run_distill_stage
from distdd_nas.stages.report import run_report_stage
from distdd_nas.stages.search import run_search_stage
from distdd_nas.stages.validate import run_validate_stage
from distdd_nas.study import Study

#: Stage directories a run may hold, in pipeline order.
STAGES = ("partition", "fedavg", "distill", "search", "validate", "report", "groundtruth")


def run_all(
    study: Study,
    out: Path,
    *,
    cache: Path,
    progress: Progress | None = None,
    on_stage: Callable[[str, StageOutcome, float], None] | None = None,
) -> StageOutcome:
    """distill (cached) → search (resumed) → validate (reused when done) → report.

    ``progress`` follows every stage's tasks; ``on_stage(name, outcome, seconds)`` is called
    as each stage finishes (the CLI prints one line per stage from it).

    Raises:
        ConfigError: ``search.objective = "fedavg"``: the FedAvg-based search is a baseline with
            nothing to distil or validate; run its ``search`` stage on its own.
    """
    if study.config.search.objective == "fedavg":
        raise ConfigError(
            "search.objective=fedavg is the FedAvg-based baseline search: there is nothing to "
            "distil or validate; run 'distdd-nas search' with it instead of 'run'"
        )
    steps: list[tuple[str, Callable[[], StageOutcome]]] = [
        ("distill", lambda: run_distill_stage(study, out, cache=cache, progress=progress)),
        ("search", lambda: run_search_stage(study, out, cache=cache, progress=progress)),
        ("validate", lambda: run_validate_stage(study, out, progress=progress)),
        ("report", lambda: run_report_stage(study, out, cache=cache)),
    ]
    outcome: StageOutcome | None = None
    for name, step in steps:
        start = time.perf_counter()
        outcome = step()
        if on_stage is not None:
            on_stage(name, outcome, time.perf_counter() - start)
    assert outcome is not None
    return outcome


def inspect_run(out: Path) -> dict[str, Any]:
    """Summarise a run directory: the study, and for each stage whether it is complete plus
    its summary.

    Raises:
        ArtifactError: ``out`` is not a run directory.
    """
    config_path = out / "config.json"
    if not config_path.is_file():
        raise ArtifactError(
            f"{out} is not a run directory (no config.json); pass the --out DIR of a run, "
            "e.g. runs/smoke"
        )
    config = load_json(config_path)
    stages: dict[str, Any] = {}
    for name in STAGES:
        path = out / name
        if not path.exists():
            continue
        complete = is_complete(path)
        summary = load_json(path / "summary.json") if complete else None
        stages[name] = {"complete": complete, "summary": summary}
    return {
        "study": config.get("study", {}).get("name"),
        "fingerprint": config.get("fingerprint"),
        "stages": stages,
    }
