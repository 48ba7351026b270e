"""``distdd-nas`` command line: one subcommand per stage, plus ``run`` and ``inspect``.

This is the only place that exits: every :class:`~distdd_nas.errors.DistddError` becomes one line
on stderr and exit code 2; argument errors too. Before any stage runs, the command's inputs are
checked (:mod:`distdd_nas.checks`), so bad input fails in seconds and changes nothing on disk.
Any other exception (a bug, or the system refusing something on a user's path) is one line too,
``unexpected <Type>: <message>`` plus where to report it, also with exit code 2 — the CLI cannot
tell a user's environment from a bug, and scripts get one code for "the run did not happen";
the traceback is printed only with ``-v``. Ctrl-C exits 130. Progress bars live here, not in
the library.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from distdd_nas.allocator import tune_malloc
from distdd_nas.config import StudyConfig, load_config
from distdd_nas.console import Console, duration, route_logging, stage_note
from distdd_nas.errors import DistddError

if TYPE_CHECKING:
    from distdd_nas.study import Study

PROG = "distdd-nas"

#: Threads when neither ``--threads`` nor :data:`THREADS_ENV` says: 1, because these
#: workloads (small CNNs, small batches) gain little from more, a shared machine loses 5-13x
#: when torch's pools oversubscribe the cores, and the count must not depend on load (it is
#: part of a distilled set's cache key).
DEFAULT_THREADS = 1
THREADS_ENV = "DISTDD_NAS_THREADS"

#: Where an unexpected error should be reported when the installed package names no tracker.
DEFAULT_TRACKER = "the project's issue tracker"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (problem and fix) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}; see '{self.prog} --help'\n")


def _load(args: argparse.Namespace) -> tuple[StudyConfig, Path]:
    config = load_config(args.study, args.set or ())
    out = Path(args.out) if args.out else Path("runs") / config.study.name
    return config, out


def _prepare(args: argparse.Namespace, *, cache: bool) -> tuple[Study, Path]:
    """Load the config, build the study and check everything the command needs before any stage
    runs (:func:`distdd_nas.checks.check_command`)."""
    from distdd_nas.checks import check_command
    from distdd_nas.study import Study

    config, out = _load(args)
    study = Study(config)
    check_command(study, args.command, out=out, cache=Path(args.cache) if cache else None)
    return study, out


def _print_summary(title: str, summary: dict[str, Any], keys: Sequence[str], where: Path) -> None:
    print(f"{title} → {where}")
    for key in keys:
        if key in summary:
            value = summary[key]
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"  {key:<24} {text}")


def _staged(
    name: str, keys: Sequence[str], *, cache: bool = True, bar: bool = True
) -> Callable[[argparse.Namespace], None]:
    """A subcommand that runs stage ``name`` (``distdd_nas.stages.<name>``) and prints keys of
    its summary."""

    def command(args: argparse.Namespace) -> None:
        import importlib

        study, out = _prepare(args, cache=cache)
        module = importlib.import_module(f"distdd_nas.stages.{name}")
        fn = getattr(module, STAGE_FUNCTIONS[name])
        kwargs: dict[str, Any] = {"cache": Path(args.cache)} if cache else {}
        if getattr(args, "shard", None) is not None:
            kwargs["shard"] = args.shard
        if bar:
            kwargs["progress"] = args.console
        start = time.perf_counter()
        outcome = fn(study, out, **kwargs)
        args.console.stage_done(name, time.perf_counter() - start, stage_note(name, outcome))
        _print_summary(name, outcome.summary, keys, outcome.path)

    return command


#: Stage module → its entry function.
STAGE_FUNCTIONS = {
    "partition": "run_partition",
    "fedavg": "run_fedavg_stage",
    "distill": "run_distill_stage",
    "search": "run_search_stage",
    "validate": "run_validate_stage",
    "report": "run_report_stage",
    "groundtruth": "run_groundtruth_stage",
}

cmd_partition = _staged(
    "partition",
    (
        "dataset",
        "method",
        "num_clients",
        "train_examples",
        "client_size_min",
        "client_size_max",
        "classes_per_client_mean",
        "noisy_clients",
        "labels_changed",
    ),
    cache=False,
    bar=False,
)
cmd_fedavg = _staged(
    "fedavg",
    (
        "test_accuracy",
        "rounds",
        "num_clients",
        "model",
        "num_parameters",
        "bytes_up",
        "bytes_down",
        "wall_s",
    ),
    cache=False,
)
cmd_distill = _staged(
    "distill",
    (
        "test_accuracy_mean",
        "test_accuracy_std",
        "random_real_accuracy_mean",
        "ipc",
        "iterations",
        "num_clients",
        "bytes_up",
        "bytes_down",
        "cache_hit",
        "artifact",
        "wall_s",
    ),
)
cmd_search = _staged(
    "search", ("backend", "space", "n_trials", "best_value", "bytes_down", "storage", "wall_s")
)
cmd_validate = _staged(
    "validate",
    (
        "n_validated",
        "kendall_tau",
        "spearman_rho",
        "top1_regret",
        "topk_overlap",
        "best_fedavg_accuracy",
        "wall_s",
    ),
    cache=False,
)
cmd_report = _staged(
    "report",
    (
        "kendall_tau",
        "spearman_rho",
        "top1_regret",
        "n_trials",
        "n_validated",
        "bytes_distdd_total",
        "bytes_fedavg_nas_total",
        "comm_ratio",
        "break_even_candidates",
    ),
    bar=False,
)
cmd_groundtruth = _staged(
    "groundtruth",
    (
        "candidates",
        "replicates",
        "rounds",
        "units",
        "seed_vs_seed_kendall_tau",
        "best_mean_accuracy",
        "bytes_total",
        "train_wall_s_total",
        "wall_s",
    ),
    cache=False,
)


def cmd_run(args: argparse.Namespace) -> None:
    from distdd_nas.pipeline import run_all

    study, out = _prepare(args, cache=True)
    console = args.console
    times: list[tuple[str, float]] = []

    def on_stage(name: str, outcome: Any, seconds: float) -> None:
        times.append((name, seconds))
        console.stage_done(name, seconds, stage_note(name, outcome))

    outcome = run_all(study, out, cache=Path(args.cache), progress=console, on_stage=on_stage)
    console.line(
        "stage times: "
        + ", ".join(f"{n} {duration(t)}" for n, t in times)
        + f"; total {duration(sum(t for _, t in times))}"
    )
    _print_summary(
        "report",
        outcome.summary,
        (
            "kendall_tau",
            "spearman_rho",
            "top1_regret",
            "n_trials",
            "n_validated",
            "distilled_accuracy",
            "random_real_accuracy",
            "bytes_distdd_total",
            "bytes_fedavg_nas_total",
            "comm_ratio",
            "break_even_candidates",
        ),
        outcome.path,
    )
    print(f"report: {outcome.path / 'report.md'}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from distdd_nas.pipeline import inspect_run

    info = inspect_run(Path(args.dir))
    print(f"run {args.dir}: study {info['study']} (config {info['fingerprint']})")
    if not info["stages"]:
        print("  no stage has run yet")
    for name, stage in info["stages"].items():
        state = "complete" if stage["complete"] else "INCOMPLETE (re-run the stage)"
        print(f"  {name:<10} {state}")
        for key, value in (stage["summary"] or {}).items():
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                text = f"{value:.4f}" if isinstance(value, float) else str(value)
                print(f"    {key:<28} {text}")


def _shard(text: str) -> tuple[int, int]:
    """``K/N`` → (K, N) with 0 <= K < N (argparse type: errors become one line, exit 2)."""
    k, sep, n = text.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not int(k) < int(n):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N, e.g. 0/2")
    return int(k), int(n)


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "study",
        help="study file, or a shipped study by name from any directory: e.g. "
        "studies/smoke.toml, smoke",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value (TOML literal), e.g. --set fedavg.rounds=5",
    )
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<study name>)")
    p.add_argument(
        "--cache",
        metavar="DIR",
        default="artifacts",
        help="content-addressed cache of distilled sets (default: artifacts)",
    )


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str]] = {
    "partition": (cmd_partition, "partition the data over clients and write class-count tables"),
    "fedavg": (cmd_fedavg, "train the reference model with FedAvg on the clients"),
    "distill": (cmd_distill, "distil one global synthetic set from federated class gradients"),
    "search": (cmd_search, "search architectures/hyper-parameters on the distilled set"),
    "validate": (cmd_validate, "train the proxy's top-k and random controls with real FedAvg"),
    "report": (cmd_report, "write report.md, summary.json, tables and plots"),
    "groundtruth": (
        cmd_groundtruth,
        "real FedAvg curves of candidates sampled from the space (resumable evidence table)",
    ),
    "run": (cmd_run, "every stage: distill → search → validate → report (cached stages reused)"),
}


def _add_common_args(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``-v`` and ``--threads``, accepted before or after the subcommand (the subcommand's
    copies have no default, so they only override what was given before it)."""
    unset: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details", **unset)
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"torch threads (default: ${THREADS_ENV} or {DEFAULT_THREADS}: on a shared "
        "machine more threads than free cores make torch's pools spin, 5-13x slower; "
        "raise it on a dedicated machine; it is part of a distilled set's cache key, "
        "since float rounding depends on it)",
        **({"default": None} if defaults else unset),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="DistDD-based architecture search for federated learning"
    )
    _add_common_args(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common_args(p, defaults=False)
        _add_study_args(p)
        p.set_defaults(func=fn)
        if name == "groundtruth":
            p.add_argument(
                "--shard",
                type=_shard,
                metavar="K/N",
                help="train only units K, K+N, ... (N processes share one table)",
            )
    p = sub.add_parser(
        "inspect",
        help="summarise a run directory",
        description="summarise a run directory: stages, completion, key figures",
    )
    _add_common_args(p, defaults=False)
    p.add_argument("dir", help="run directory, e.g. runs/smoke")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or an argument error (2, already printed)
        return int(stop.code or 0)
    threads = _threads(args.threads)
    if threads is None:
        return 2
    import torch

    torch.set_num_threads(threads)
    tune_malloc()
    args.console = Console()
    route_logging(args.console, verbose=args.verbose)
    try:
        args.func(args)
    except DistddError as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        args.console.close()
        print(
            f"{PROG}: interrupted; completed stages are kept, re-run to continue", file=sys.stderr
        )
        return 130
    except Exception as err:  # not ours: a bug, or the OS refusing something (see the docstring)
        if args.verbose:
            traceback.print_exc()
        print(
            f"{PROG}: error: unexpected {type(err).__name__}: {_one_line(err)}; re-run with -v "
            f"for the traceback and report it at {_issue_tracker()}",
            file=sys.stderr,
        )
        return 2
    return 0


def _threads(given: int | None) -> int | None:
    """The thread count: ``--threads``, else ``$DISTDD_NAS_THREADS``, else
    :data:`DEFAULT_THREADS`; None (after printing one line) when it is not an integer >= 1."""
    text = str(given) if given is not None else os.environ.get(THREADS_ENV, "")
    if not text:
        return DEFAULT_THREADS
    where = "--threads" if given is not None else f"${THREADS_ENV}"
    if not text.strip().isdigit() or int(text) < 1:
        print(f"{PROG}: error: {where} must be an integer >= 1 (got {text!r})", file=sys.stderr)
        return None
    return int(text)


def _one_line(err: BaseException, limit: int = 400) -> str:
    """An exception's message on one line (whitespace runs collapsed), at most ``limit`` chars."""
    text = " ".join(str(err).split()) or "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _issue_tracker() -> str:
    """The installed package's issue tracker URL (``[project.urls]``), else a description."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("distdd-nas").get_all("Project-URL") or []
    except PackageNotFoundError:
        return DEFAULT_TRACKER
    labelled = dict(entry.split(",", 1) for entry in urls if "," in entry)
    for label in ("Issues", "Bug Tracker", "Tracker", "Repository", "Source", "Homepage"):
        for key, url in labelled.items():
            if key.strip().lower() == label.lower():
                return url.strip()
    return DEFAULT_TRACKER


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
