"""Studies and search spaces shipped inside the package, found through :mod:`importlib.resources`.

The TOML files live in ``distdd_nas/studies/`` and ``distdd_nas/search_spaces/`` (package data,
so a wheel install carries them; the repository's top-level ``studies`` and ``search_spaces``
are symbolic links to them). A study argument that is not an existing file but names a shipped
study — ``smoke``, ``smoke.toml`` or ``studies/smoke.toml`` — resolves to the packaged file, so
``distdd-nas run studies/smoke.toml`` works from any directory; a search space is named by its
stem (``search.space = "smoke"``).

The package must be installed on a file system (a wheel or an editable install, never a zip):
studies are read as files because ``extends`` names a file beside them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: Package folders holding the shipped TOML files.
STUDIES = "studies"
SPACES = "search_spaces"


def shipped_dir(kind: str) -> Path:
    """The package folder of shipped ``kind`` files (:data:`STUDIES` or :data:`SPACES`)."""
    return Path(str(files("distdd_nas").joinpath(kind)))


def shipped_names(kind: str) -> list[str]:
    """Stems of the shipped ``kind`` files, sorted (what error messages list)."""
    folder = shipped_dir(kind)
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def shipped_file(kind: str, name: str) -> Path | None:
    """The shipped ``kind`` file ``name`` names, or None.

    ``name`` may be a stem (``smoke``), a file name (``smoke.toml``) or the repository path
    (``studies/smoke.toml``, ``search_spaces/smoke.toml``); any other folder, or an absolute
    path, names no shipped file.
    """
    path = Path(name)
    if path.is_absolute() or (len(path.parts) == 2 and path.parts[0] != kind):
        return None
    if len(path.parts) not in (1, 2) or path.suffix not in ("", ".toml"):
        return None
    candidate = shipped_dir(kind) / f"{path.stem}.toml"
    return candidate if candidate.is_file() else None


def resolve_study(name: str | Path, *, folder: Path | None = None) -> Path:
    """The study file ``name`` (relative to ``folder`` when given: how ``extends`` names its
    base) when it exists, else the shipped study ``name`` names, else the path unchanged (the
    loader then reports it missing, listing :func:`shipped_names`)."""
    path = Path(name) if folder is None else folder / name
    try:
        if path.is_file():
            return path
    except OSError:  # e.g. a name too long for the file system
        return path
    return shipped_file(STUDIES, str(name)) or path


__all__ = ["SPACES", "STUDIES", "resolve_study", "shipped_dir", "shipped_file", "shipped_names"]
