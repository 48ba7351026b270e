"""Progress and logs for a person and for a log file (distdd_nas/console.py), and the CLI's
thread options."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from distdd_nas.cli import DEFAULT_THREADS, THREADS_ENV, build_parser, main
from distdd_nas.console import LOG_EVERY_S, Console, duration, route_logging
from tests.conftest import SMOKE


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_non_tty_console_prints_start_periodic_and_end_lines() -> None:
    stream, clock = io.StringIO(), FakeClock()
    console = Console(stream, interactive=False, clock=clock)
    console("search", 0, 6, {})
    clock.now = 1.0
    console("search", 1, 6, {"best": 0.5})  # too soon after the start: no line
    clock.now = LOG_EVERY_S + 2
    console("search", 2, 6, {"best": 0.75})
    clock.now = 100.0
    console("search", 6, 6, {"best": 0.875})
    console.stage_done("search", 100.0, "6 trials")
    assert stream.getvalue().splitlines() == [
        "search: started (6 trials)",
        "search: 2/6 (best 0.75)",
        "✓ search: 6 trials in 1 min 40 s (best 0.875)",
        "■ search done in 1 min 40 s: 6 trials",
    ]
    assert console.finished == [("search", 6, 100.0)]


def test_tty_console_draws_a_bar_that_advances_and_stays() -> None:
    stream = io.StringIO()
    console = Console(stream, interactive=True)
    for done in range(4):
        console("validate", done, 3, {"test_accuracy": 0.5})
    text = stream.getvalue()
    assert "validate: 100%" in text and "3/3" in text  # tqdm's own rendering
    assert "✓ validate: 3 candidates in" in text


def test_log_records_and_optunas_go_through_the_console() -> None:
    import optuna

    stream = io.StringIO()
    console = Console(stream, interactive=False)
    route_logging(console, verbose=False)
    try:
        logging.getLogger("distdd_nas.test").warning("disk almost full")
        optuna.logging.get_logger("optuna").info("A new study created")  # INFO: hidden
        optuna.logging.get_logger("optuna").warning("trial failed")
    finally:
        optuna.logging.enable_default_handler()
        optuna.logging.disable_propagation()
        for h in list(logging.getLogger().handlers):
            if type(h).__name__ == "ConsoleHandler":
                logging.getLogger().removeHandler(h)
    assert stream.getvalue().splitlines() == [
        "WARNING distdd_nas.test: disk almost full",
        "WARNING optuna: trial failed",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.25, "4.2 s"), (125, "2 min 05 s"), (3723, "1 h 02 min")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_threads_are_accepted_before_and_after_the_subcommand() -> None:
    parser = build_parser()
    assert parser.parse_args(["--threads", "3", "partition", str(SMOKE)]).threads == 3
    assert parser.parse_args(["partition", str(SMOKE), "--threads", "2"]).threads == 2
    assert parser.parse_args(["partition", "-v", str(SMOKE)]).verbose is True
    assert parser.parse_args(["partition", str(SMOKE)]).threads is None


def test_thread_default_env_and_bad_values(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    out = str(tmp_path / "run")
    try:
        monkeypatch.delenv(THREADS_ENV, raising=False)
        assert main(["partition", str(SMOKE), "--out", out]) == 0
        assert torch.get_num_threads() == DEFAULT_THREADS == 1
        monkeypatch.setenv(THREADS_ENV, "2")
        assert main(["partition", str(SMOKE), "--out", out]) == 0
        assert torch.get_num_threads() == 2
        assert main(["partition", str(SMOKE), "--out", out, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # the flag beats the environment
        capsys.readouterr()
        monkeypatch.setenv(THREADS_ENV, "many")
        assert main(["partition", str(SMOKE), "--out", out]) == 2
        err = capsys.readouterr().err
        assert err == f"distdd-nas: error: ${THREADS_ENV} must be an integer >= 1 (got 'many')\n"
        assert main(["partition", str(SMOKE), "--threads", "0"]) == 2
        assert "--threads must be an integer >= 1 (got '0')" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_a_real_terminal_gets_advancing_bars_and_the_stage_line(tmp_path) -> None:
    """Under a pseudo-terminal (what tmux gives a shell), stderr is a TTY: tqdm draws a bar per
    task that advances round by round and stays, followed by the stage's summary line."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    args = ["fedavg", str(SMOKE), "--set", "fedavg.rounds=3", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "distdd_nas.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "\r" in text  # a bar redrawn in place
    for done in (1, 2, 3):
        assert f"{done}/3" in text  # it advanced through every round
    assert "fedavg: 100%" in text and "■ fedavg done in" in text
