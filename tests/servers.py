"""A throw-away PostgreSQL server on loopback for tests: initdb in a temp dir, stopped on exit.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user that Debian's package creates. Skips the test when no server binaries are
installed (``make setup`` installs them where apt is available).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private PostgreSQL cluster on 127.0.0.1; yield its SQLAlchemy URL."""
    bindir = _bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="distdd-pg-"))
    data = base / "data"
    if as_root:
        shutil.chown(base, user="postgres")
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "distdd",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    log = base / "server.log"
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {base} -c max_connections=50",
            "start",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "distdd",
                "optuna",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql+psycopg2://distdd@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            env=env,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)
