"""What a person (or a log file) sees while a command runs: one progress bar per task, a
one-line summary per stage with its time, and every log record (Optuna's included) through one
handler that does not break the bars.

On a terminal each task (``distil``, ``evaluate``, ``search``, ``validate``, ``fedavg``,
``groundtruth``) gets a tqdm bar that advances and stays on screen when finished. When stderr
is not a terminal (CI, ``> run.log``, ``nohup``) there are no bars: a task prints one line when
it starts, one at most every :data:`LOG_EVERY_S` seconds while it runs, and one when it ends,
so a 15-minute run never goes silent and a log stays readable. The library never prints; it
calls a :class:`~distdd_nas.stages.common.Progress` and logs, and only the CLI wires those here.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

#: Seconds between progress lines when stderr is not a terminal.
LOG_EVERY_S = 30.0

#: What a task counts, for bars and lines.
UNITS = {
    "distil": "iteration",
    "evaluate": "network",
    "search": "trial",
    "validate": "candidate",
    "fedavg": "round",
    "groundtruth": "training",
}

#: Metrics worth showing beside a bar, with their labels.
SHOWN = {
    "test_accuracy": "acc",
    "match_loss": "match",
    "train_loss": "loss",
    "best": "best",
    "value": "score",
}


def _metrics(info: Mapping[str, float]) -> str:
    return ", ".join(f"{label} {info[k]:.4g}" for k, label in SHOWN.items() if k in info)


def duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


@dataclass
class _Task:
    total: int
    started: float
    done: int = 0
    logged: float = 0.0
    bar: Any = None
    info: dict[str, float] = field(default_factory=dict)


class Console:
    """Progress of a command's tasks on ``stream`` (stderr by default).

    Callable as a :class:`~distdd_nas.stages.common.Progress`: ``console(task, done, total,
    info)``. ``interactive=None`` decides from ``stream.isatty()``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interactive: bool | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.tasks: dict[str, _Task] = {}
        self.finished: list[tuple[str, int, float]] = []

    def __call__(self, task: str, done: int, total: int, info: Mapping[str, float]) -> None:
        now = self.clock()
        t = self.tasks.get(task)
        if t is None:
            t = self.tasks[task] = _Task(total=total, started=now, logged=now)
            if self.interactive:
                from tqdm.auto import tqdm

                t.bar = tqdm(
                    desc=task,
                    total=total,
                    unit=UNITS.get(task, "step"),
                    file=self.stream,
                    dynamic_ncols=True,
                    leave=True,
                )
            else:
                self.line(f"{task}: started ({total} {UNITS.get(task, 'step')}s)")
        t.total, t.done, t.info = total, done, dict(info)
        if t.bar is not None:
            t.bar.total = total
            t.bar.n = done
            t.bar.set_postfix_str(_metrics(info), refresh=False)
            t.bar.refresh()
        elif done < total and now - t.logged >= LOG_EVERY_S:
            t.logged = now
            extra = _metrics(info)
            self.line(f"{task}: {done}/{total}" + (f" ({extra})" if extra else ""))
        if done >= total:
            self._finish(task, t, now)

    def _finish(self, task: str, t: _Task, now: float) -> None:
        if t.bar is not None:
            t.bar.close()
        seconds = now - t.started
        extra = _metrics(t.info)
        unit = UNITS.get(task, "step")
        self.line(
            f"✓ {task}: {t.done} {unit}{'s' if t.done != 1 else ''} in {duration(seconds)}"
            + (f" ({extra})" if extra else "")
        )
        self.finished.append((task, t.done, seconds))
        del self.tasks[task]

    def stage_done(self, stage: str, seconds: float, note: str = "") -> None:
        """The one line a finished stage leaves: its name, time and what it produced."""
        self.line(f"■ {stage} done in {duration(seconds)}" + (f": {note}" if note else ""))

    def line(self, text: str) -> None:
        """One line that does not break a bar on screen."""
        if self.interactive:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Close bars of tasks that never reached their total (an error or Ctrl-C)."""
        for t in self.tasks.values():
            if t.bar is not None:
                t.bar.close()
        self.tasks.clear()


def _cached(flag: Any) -> str:
    return " (from cache)" if flag else ""


def stage_note(stage: str, outcome: Any) -> str:
    """What a finished stage produced, in a few words (from its summary)."""
    from distdd_nas.report.units import format_bytes, format_percent

    s = outcome.summary
    if stage == "partition":
        return f"{s.get('num_clients')} clients, {s.get('train_examples')} training images"
    if stage == "fedavg":
        return (
            f"accuracy {format_percent(s.get('test_accuracy'))} after {s.get('rounds')} rounds, "
            f"{format_bytes(s.get('bytes_up', 0) + s.get('bytes_down', 0))} sent"
        )
    if stage == "distill":
        return (
            f"distilled set {format_percent(s.get('test_accuracy_mean'))} (random real "
            f"{format_percent(s.get('random_real_accuracy_mean'))}), "
            f"{format_bytes(s.get('bytes_up', 0) + s.get('bytes_down', 0))} sent"
            f"{_cached(s.get('cache_hit'))}"
            + (", evaluation from cache" if s.get("evaluation_cache_hit") else "")
        )
    if stage == "search":
        return f"{s.get('n_trials')} trials, best score {format_percent(s.get('best_value'))}"
    if stage == "validate":
        tau = s.get("kendall_tau")
        return (
            f"{s.get('n_validated')} candidates trained with FedAvg, Kendall τ "
            f"{'n/a' if tau is None else f'{tau:.2f}'}{_cached(s.get('cache_hit'))}"
        )
    if stage == "report":
        return (
            f"use candidate {s.get('best_candidate_id')} "
            f"({format_percent(s.get('best_fedavg_accuracy'))} in FedAvg); "
            f"{outcome.path / 'report.md'}"
        )
    if stage == "groundtruth":
        return f"{s.get('finished', s.get('units'))}/{s.get('units')} trainings"
    return ""


class ConsoleHandler(logging.Handler):
    """A logging handler that writes through :meth:`Console.line` (bars stay intact)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.line(self.format(record))
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def route_logging(console: Console, *, verbose: bool) -> None:
    """Send every log record, Optuna's own included, through ``console``: INFO with
    ``verbose``, else WARNING (Optuna's "A new study created" INFO line would break a bar)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, ConsoleHandler):
            root.removeHandler(handler)
    root.addHandler(ConsoleHandler(console))
    root.setLevel(logging.INFO if verbose else logging.WARNING)


__all__ = [
    "LOG_EVERY_S",
    "UNITS",
    "Console",
    "ConsoleHandler",
    "duration",
    "route_logging",
    "stage_note",
]
