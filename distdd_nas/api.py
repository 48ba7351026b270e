"""The Python API: a study in a notebook, stage by stage, with typed results.

:func:`load_study` reads a study (a path, or the name of a shipped one) with ``--set``-style
overrides and binds it to a run directory and a cache, as the CLI does; the returned
:class:`StudyRun` runs the stages — :meth:`~StudyRun.distill`, :meth:`~StudyRun.search`,
:meth:`~StudyRun.validate`, :meth:`~StudyRun.report`, or :meth:`~StudyRun.run` for all four —
each through the same stage function the CLI calls (:mod:`distdd_nas.stages`), after the same
checks (:func:`distdd_nas.checks.check_command`), writing the same files. Each returns a frozen
dataclass with the figures a notebook wants as attributes (accuracy, bytes, the trial table as
a :class:`pandas.DataFrame`, best parameters, the validation table, the report's paths), plus
the stage's whole ``summary`` dict as stored in ``summary.json``.

The stages are methods, not functions of the package, because ``distdd_nas.distill``,
``distdd_nas.search`` and ``distdd_nas.report`` already name subpackages. Errors are the
library's own (:class:`~distdd_nas.errors.DistddError` subclasses, one line naming the fix).
A distilled set's fingerprint includes torch's thread count, as with ``--threads``: call
``torch.set_num_threads`` first to share a cache with a CLI run made with ``--threads N``.

Example (the README's; a few seconds on scikit-learn's digits)::

    import distdd_nas as dd

    study = dd.load_study("smoke", FAST, out="runs/api-smoke")  # FAST: dict of overrides
    result = study.run()
    result.distill.accuracy, result.search.best_params, result.report.summary["kendall_tau"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from distdd_nas.checks import check_command
from distdd_nas.config import StudyConfig, load_config
from distdd_nas.distill import DistilledSet
from distdd_nas.pipeline import run_all
from distdd_nas.search.candidate import params_from_row
from distdd_nas.search.ranking import rank_trials
from distdd_nas.stages.common import Progress, StageOutcome
from distdd_nas.stages.distill import load_distilled, run_distill_stage
from distdd_nas.stages.report import run_report_stage
from distdd_nas.stages.search import run_search_stage
from distdd_nas.stages.validate import run_validate_stage
from distdd_nas.study import Study

#: The CLI's defaults: ``--cache artifacts`` and ``--out runs/<study name>`` (relative to cwd).
DEFAULT_CACHE = Path("artifacts")
RUNS = Path("runs")


def _float(summary: Mapping[str, Any], key: str) -> float:
    """``summary[key]`` as a float; NaN where it is missing or undefined (stored as null)."""
    value = summary.get(key)
    return float(value) if value is not None else math.nan


@dataclass(frozen=True)
class DistillResult:
    """The distill stage: the cached synthetic set and its evaluation (``DIR/distill/``)."""

    path: Path
    """The stage directory, ``DIR/distill``."""
    artifact: Path
    """The cache entry holding ``synthetic.npz`` (shared by every search)."""
    accuracy: float
    """Mean test accuracy of networks trained on the distilled set."""
    accuracy_std: float
    """Its standard deviation over the evaluation networks."""
    random_real_accuracy: float
    """The same with random real subsets of equal size."""
    bytes_up: int
    """Client → server bytes of the distillation (measured)."""
    bytes_down: int
    """Server → client bytes."""
    cache_hit: bool
    """True when the set came from the cache (nothing distilled now)."""
    summary: dict[str, Any] = field(repr=False)
    """Everything ``summary.json`` holds."""

    @property
    def bytes(self) -> int:
        """All bytes the distillation sent, both directions."""
        return self.bytes_up + self.bytes_down

    def synthetic(self) -> DistilledSet:
        """The distilled images and labels (tensors), read from the cache entry."""
        return load_distilled(self.artifact)

    @classmethod
    def from_outcome(cls, outcome: StageOutcome) -> DistillResult:
        """Read the figures off the stage's summary."""
        s = outcome.summary
        return cls(
            path=outcome.path,
            artifact=Path(s["artifact"]),
            accuracy=_float(s, "test_accuracy_mean"),
            accuracy_std=_float(s, "test_accuracy_std"),
            random_real_accuracy=_float(s, "random_real_accuracy_mean"),
            bytes_up=int(s["bytes_up"]),
            bytes_down=int(s["bytes_down"]),
            cache_hit=bool(s["cache_hit"]),
            summary=s,
        )


@dataclass(frozen=True)
class SearchResult:
    """The search stage: every trial and the proxy's favourite (``DIR/search/``)."""

    path: Path
    """The stage directory, ``DIR/search``."""
    trials: pd.DataFrame = field(repr=False)
    """``trials.csv``: one row per trial."""
    best_value: float
    """The best score (proxy accuracy, or FedAvg's for a FedAvg search)."""
    best_params: dict[str, Any]
    """Parameters of the best completed trial, as Optuna names them."""
    n_trials: int
    """Finished trials (completed or pruned)."""
    summary: dict[str, Any] = field(repr=False)
    """Everything ``summary.json`` holds."""

    @classmethod
    def from_outcome(cls, outcome: StageOutcome) -> SearchResult:
        """Read the trial table the stage wrote; the best row is the ranking's first."""
        trials = pd.read_csv(outcome.path / "trials.csv")
        ranked = rank_trials(trials)
        return cls(
            path=outcome.path,
            trials=trials,
            best_value=_float(outcome.summary, "best_value"),
            best_params=params_from_row(ranked.iloc[0].to_dict()) if len(ranked) else {},
            n_trials=int(outcome.summary["n_trials"]),
            summary=outcome.summary,
        )


@dataclass(frozen=True)
class ValidateResult:
    """The validate stage: real FedAvg of the selected candidates (``DIR/validate/``)."""

    path: Path
    """The stage directory, ``DIR/validate``."""
    table: pd.DataFrame = field(repr=False)
    """``validation.csv``: proxy score vs FedAvg."""
    ranking: pd.DataFrame = field(repr=False)
    """``ranking.csv``: every candidate by proxy."""
    kendall_tau: float
    """Rank correlation of proxy score and FedAvg accuracy."""
    spearman_rho: float
    """Spearman's ρ of the same."""
    top1_regret: float
    """Best validated FedAvg accuracy minus the proxy favourite's."""
    n_validated: int
    """Candidates trained with FedAvg."""
    summary: dict[str, Any] = field(repr=False)
    """Everything ``summary.json`` holds."""

    @classmethod
    def from_outcome(cls, outcome: StageOutcome) -> ValidateResult:
        """Read the tables the stage wrote and the figures off its summary."""
        s = outcome.summary
        return cls(
            path=outcome.path,
            table=pd.read_csv(outcome.path / "validation.csv"),
            ranking=pd.read_csv(outcome.path / "ranking.csv"),
            kendall_tau=_float(s, "kendall_tau"),
            spearman_rho=_float(s, "spearman_rho"),
            top1_regret=_float(s, "top1_regret"),
            n_validated=int(s["n_validated"]),
            summary=s,
        )


@dataclass(frozen=True)
class ReportResult:
    """The report stage: ``report.md``, figures and the study's summary (``DIR/report/``)."""

    path: Path
    """The stage directory, ``DIR/report``."""
    markdown: Path
    """``report.md``."""
    figures: dict[str, Path]
    """File name → path of every figure (PNG)."""
    summary: dict[str, Any] = field(repr=False)
    """``summary.json``: τ, ρ, regret, bytes, ..."""

    @classmethod
    def from_outcome(cls, outcome: StageOutcome) -> ReportResult:
        """List the files the stage wrote."""
        figures = {p.name: p for p in sorted(outcome.path.glob("*.png"))}
        return cls(outcome.path, outcome.path / "report.md", figures, outcome.summary)


@dataclass(frozen=True)
class RunResult:
    """Every stage of :meth:`StudyRun.run`, in pipeline order."""

    distill: DistillResult
    """The distilled set and its evaluation."""
    search: SearchResult
    """The trials on the distilled set."""
    validate: ValidateResult
    """Real FedAvg of the selected candidates."""
    report: ReportResult
    """The report's summary and files."""


@dataclass(frozen=True, eq=False)
class StudyRun:
    """A study bound to its run directory and cache: what the stage methods work on.

    Built by :func:`load_study`. ``study`` holds the objects every stage shares (the federation
    is loaded once, on first use), so running the stages one by one costs what :meth:`run`
    costs. Stages reuse what is done, as on the command line: a cached distilled set, a
    finished search (resumed), a finished validation of the same trials.
    """

    study: Study
    """The study's objects (:class:`distdd_nas.study.Study`)."""
    out: Path
    """The run directory (``--out``)."""
    cache: Path
    """The cache of distilled sets (``--cache``)."""

    @property
    def config(self) -> StudyConfig:
        """The resolved configuration (what ``DIR/config.json`` records)."""
        return self.study.config

    @property
    def name(self) -> str:
        """``study.name``: the default run directory's name."""
        return self.config.study.name

    def _checked(self, command: str) -> None:
        check_command(self.study, command, out=self.out, cache=self.cache)

    def distill(self, *, progress: Progress | None = None) -> DistillResult:
        """Distil the set (or reuse the cached one) and evaluate it: ``distdd-nas distill``."""
        self._checked("distill")
        outcome = run_distill_stage(self.study, self.out, cache=self.cache, progress=progress)
        return DistillResult.from_outcome(outcome)

    def search(self, *, progress: Progress | None = None) -> SearchResult:
        """Search the space on the distilled set (distilling first if needed; resumes a
        stopped search): ``distdd-nas search``."""
        self._checked("search")
        outcome = run_search_stage(self.study, self.out, cache=self.cache, progress=progress)
        return SearchResult.from_outcome(outcome)

    def validate(self, *, progress: Progress | None = None) -> ValidateResult:
        """Train the proxy's top-k and random controls with real FedAvg (needs a finished
        :meth:`search` in the same run directory): ``distdd-nas validate``."""
        self._checked("validate")
        return ValidateResult.from_outcome(
            run_validate_stage(self.study, self.out, progress=progress)
        )

    def report(self) -> ReportResult:
        """Write ``report.md``, figures and ``summary.json`` from the finished stages:
        ``distdd-nas report``."""
        self._checked("report")
        return ReportResult.from_outcome(run_report_stage(self.study, self.out, cache=self.cache))

    def run(self, *, progress: Progress | None = None) -> RunResult:
        """distill → search → validate → report (:func:`distdd_nas.pipeline.run_all`), as
        ``distdd-nas run``; every stage's result."""
        self._checked("run")
        outcomes: dict[str, StageOutcome] = {}

        def keep(name: str, outcome: StageOutcome, _seconds: float) -> None:
            outcomes[name] = outcome

        run_all(self.study, self.out, cache=self.cache, progress=progress, on_stage=keep)
        return RunResult(
            distill=DistillResult.from_outcome(outcomes["distill"]),
            search=SearchResult.from_outcome(outcomes["search"]),
            validate=ValidateResult.from_outcome(outcomes["validate"]),
            report=ReportResult.from_outcome(outcomes["report"]),
        )


def load_study(
    path_or_name: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    cache: str | Path | None = None,
) -> StudyRun:
    """Load a study and bind it to a run directory and a cache, as the CLI's arguments do.

    Args:
        path_or_name: A study file, or a shipped study by name (``"smoke"``, ``"smoke.toml"``,
            ``"studies/smoke.toml"``; :mod:`distdd_nas.resources`).
        overrides: ``{"section.key": value}``, the keys of ``--set``, values as Python
            objects (``{"fedavg.rounds": 3, "distill.init": "noise"}``).
        out: The run directory; default ``runs/<study name>`` relative to the working
            directory, as ``--out``.
        cache: The cache of distilled sets; default ``artifacts``, as ``--cache``.

    Raises:
        ConfigError: Unknown study, key or value (one line naming the fix).
    """
    config = load_config(path_or_name, values=overrides)
    return StudyRun(
        study=Study(config),
        out=Path(out) if out is not None else RUNS / config.study.name,
        cache=Path(cache) if cache is not None else DEFAULT_CACHE,
    )


__all__ = [
    "DistillResult",
    "ReportResult",
    "RunResult",
    "SearchResult",
    "StudyRun",
    "ValidateResult",
    "load_study",
]
