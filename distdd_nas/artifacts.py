"""Stage directories: atomic writes, a manifest written last, and safe replacement.

A stage writes into ``<dir>.partial-<pid>/`` and, once every file is there, writes
``manifest.json`` and swaps the directory into place. So a crashed or interrupted stage never
looks complete and never destroys the previous result, and a stage whose manifest carries the same
fingerprint is a cache hit. Two processes writing the same directory at once (two ``distill`` on
one ``--cache``) each use their own partial directory and the swap retries if the other replaced
the directory in between: the last complete one wins, never a mixture; :func:`locked` serialises
whole "check, compute, write" sections across processes (the distillation cache uses it).
Arrays are ``.npz`` read with ``allow_pickle=False``; tables are CSV; metadata JSON.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distdd_nas.errors import ArtifactError

MANIFEST = "manifest.json"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old file or the new one,
    never a half-written one (write to a sibling temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a complete stage directory, or None when absent or unreadable."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(path: Path, fingerprint: str | None = None) -> bool:
    """True when ``path`` holds a finished stage (optionally with this fingerprint)."""
    manifest = read_manifest(path)
    if manifest is None:
        return False
    return fingerprint is None or manifest.get("fingerprint") == fingerprint


class StageWriter:
    """Collects a stage's files in a ``.partial-<pid>`` directory; see :func:`stage`."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp
        self.files: list[str] = []

    def file(self, name: str) -> Path:
        """Path for a file written by other code (e.g. matplotlib) inside the stage."""
        self.files.append(name)
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def json(self, name: str, data: Any) -> None:
        self.file(name).write_text(dumps_json(data), encoding="utf-8")

    def csv(self, name: str, frame: pd.DataFrame) -> None:
        frame.to_csv(self.file(name), index=False)

    def npz(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        with self.file(name).open("wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]


def strict(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±Infinity) replaced by ``None``, recursively:
    JSON has no such numbers, and strict parsers (``jq``, browsers, Go, Rust) reject Python's
    ``NaN``/``Infinity`` tokens. A reader sees ``null``: "not defined" (a τ over one
    candidate) or "never" (a break-even that does not exist)."""
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray) or hasattr(value, "detach"):
        value = json_default(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def dumps_json(data: Any) -> str:
    """Strict JSON text of an artifact (sorted keys, indented, non-finite floats as null)."""
    text = json.dumps(
        strict(data), indent=2, sort_keys=True, default=json_default, allow_nan=False
    )
    return text + "\n"


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars/arrays, tensors and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


@contextmanager
def stage_in_place(
    path: Path, *, fingerprint: str, meta: Mapping[str, Any] | None = None
) -> Iterator[StageWriter]:
    """For stages whose directory must persist across runs (a search's Optuna database): the
    manifest is removed first and written last; each file is replaced atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    tmp = path / f".partial-{os.getpid()}"  # per process: workers may share the directory
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer = StageWriter(tmp)
    try:
        yield writer
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in writer.files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / name, path / name)
    shutil.rmtree(tmp, ignore_errors=True)
    _write_manifest(path, fingerprint, writer.files, meta)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Check every file of the complete stage directory ``path`` against the SHA-256 its
    manifest recorded (manifests written before checksums existed pass unchecked).

    Raises:
        ArtifactError: A listed file is missing or its bytes changed after it was written,
            naming the file and the fix.
    """
    manifest = read_manifest(path)
    if manifest is None:
        raise ArtifactError(f"{path} holds no complete stage; re-run the stage that writes it")
    for name, expected in dict(manifest.get("sha256", {})).items():
        target = Path(path) / name
        if not target.is_file():
            raise ArtifactError(f"{target} is missing; delete {path} and re-run its stage")
        if file_digest(target) != expected:
            raise ArtifactError(
                f"{target} was changed after it was written (SHA-256 differs from its "
                f"manifest); delete {path} and re-run its stage"
            )


def _write_manifest(
    path: Path, fingerprint: str, files: list[str], meta: Mapping[str, Any] | None
) -> None:
    names = sorted(set(files) - {MANIFEST})
    data = {
        "fingerprint": fingerprint,
        "files": names,
        "sha256": {name: file_digest(path / name) for name in names if (path / name).is_file()},
        "completed_unix": time.time(),
        **(dict(meta) if meta else {}),
    }
    write_atomic(
        path / MANIFEST, json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n"
    )


@contextmanager
def stage(
    path: Path, *, fingerprint: str, meta: Mapping[str, Any] | None = None
) -> Iterator[StageWriter]:
    """Write a stage atomically: files go to ``path.partial-<pid>``; on success the manifest is
    written last and the directory replaces ``path``. On any exception the partial directory is
    removed and whatever ``path`` held before is left untouched. Concurrent writers of one
    ``path`` do not share a partial directory; the last to swap wins.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    writer = StageWriter(tmp)
    try:
        yield writer
        _write_manifest(tmp, fingerprint, writer.files, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, path)


#: Times :func:`_swap_in` retries when another writer swaps its directory in at the same moment.
SWAP_ATTEMPTS = 20


def _swap_in(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, moving any previous ``path`` aside.

    ``os.replace`` cannot put a directory over a non-empty one, so the old one goes to a
    per-process ``.old-<pid>`` first. If another process swaps its own directory in between
    (``ENOTEMPTY``/``EEXIST``), that one is moved aside too and the swap is retried.
    """
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    for _ in range(SWAP_ATTEMPTS):
        shutil.rmtree(old, ignore_errors=True)
        with suppress(FileNotFoundError):  # nothing there yet, or another writer moved it
            os.replace(path, old)
        try:
            os.replace(tmp, path)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                with suppress(OSError):  # put the previous result back
                    os.replace(old, path)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(
            f"{path} kept being replaced by other processes; re-run when they have finished"
        )
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def locked(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    Processes on one host (and on file systems with working ``flock``) run such blocks one at a
    time; ``on_wait`` is called once if the lock is held by someone else, before blocking. The
    lock goes with the process, so a killed holder never leaves it stuck.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` without pickle; a corrupt file raises ArtifactError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; re-run the stage that writes it") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ArtifactError(
            f"{path} is corrupt ({type(err).__name__}); delete its stage directory and re-run"
        ) from None


def load_json(path: Path) -> Any:
    """Load a JSON artifact; missing or corrupt → ArtifactError with the fix."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; re-run the stage that writes it") from None
    except (OSError, ValueError) as err:
        raise ArtifactError(
            f"{path} is corrupt ({type(err).__name__}); delete its stage directory and re-run"
        ) from None


class AppendTable:
    """A CSV that long, resumable jobs append to in whole blocks (one block per unit of work).

    Each :meth:`append` writes its rows in one ``write`` followed by ``fsync`` while holding an
    exclusive lock (``flock`` on a sidecar ``.lock`` file), so several worker processes may
    share one table, no reader sees half a block, and a kill leaves at most one torn last line.
    :meth:`read` drops such a line for good; :meth:`keep` filters the rows under the lock (to
    drop a killed worker's partial block). Columns are fixed at creation.
    """

    def __init__(
        self, path: Path, columns: tuple[str, ...], *, text: tuple[str, ...] = ()
    ) -> None:
        self.path = Path(path)
        self.columns = columns
        self.text = text  # columns read as strings (ids such as "0123e45" are not numbers)

    def _locked(self) -> AbstractContextManager[None]:
        return locked(self.path.with_name(self.path.name + ".lock"))

    def read(self, *, repair: bool = True) -> pd.DataFrame:
        """The rows written so far (an empty frame with the columns when there is no file).

        ``repair=False`` only reads (a reader of a table others may still be writing): a torn
        last line is left out of the frame but stays in the file.

        Raises:
            ArtifactError: The file's header is not this table's columns.
        """
        with self._locked():
            return self._read_unlocked(repair=repair)

    def _read_unlocked(self, *, repair: bool = True) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=list(self.columns))
        raw = self.path.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]
        if repair and whole != raw:  # a torn last line from a killed writer: drop it for good
            write_atomic(self.path, whole)
        header = whole.split(b"\n", 1)[0].decode("utf-8", errors="replace").split(",")
        if tuple(header) != self.columns:
            raise ArtifactError(
                f"{self.path} has columns {header[:4]}..., not this table's; "
                "move it away or use another --out"
            )
        return pd.read_csv(io.BytesIO(whole), dtype=dict.fromkeys(self.text, str))

    def append(self, frame: pd.DataFrame) -> None:
        """Append ``frame`` (its columns must be this table's) durably, header first if new."""
        self._check(frame)
        with self._locked():
            new = not self.path.exists() or self.path.stat().st_size == 0
            text = frame.to_csv(index=False, header=new, lineterminator="\n")
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())

    def keep(self, rows: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
        """Replace the table by ``rows(table)`` (a filter), read and rewritten inside one lock
        so no other writer's block is lost in between; returns what was kept."""
        with self._locked():
            table = self._read_unlocked()
            kept = rows(table)
            self._check(kept)
            if self.path.exists() and len(kept) != len(table):
                write_atomic(self.path, kept.to_csv(index=False, lineterminator="\n"))
        return kept

    def _check(self, frame: pd.DataFrame) -> None:
        if tuple(frame.columns) != self.columns:
            raise ArtifactError(
                f"rows for {self.path} have columns {list(frame.columns)}; "
                f"expected {list(self.columns)}"
            )
