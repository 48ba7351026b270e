"""Study files: TOML text, ``extends`` chains and ``--set`` overrides, as plain trees.

Only reading and merging live here (no validation): :func:`distdd_nas.config.load_config` turns
the merged tree into a validated :class:`~distdd_nas.config.StudyConfig`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distdd_nas.errors import ConfigError
from distdd_nas.resources import STUDIES, resolve_study, shipped_names


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` into (["a", "b"], value) with TOML literal semantics."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"bad override {text!r}; write --set section.key=value (e.g. fedavg.rounds=5)"
        )
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words (e.g. data.name=mnist) are strings
    return key.split("."), value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def read_study(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The TOML tree of ``path`` merged over the study it ``extends`` (recursively)."""
    try:
        found = path.is_file()
    except OSError:  # e.g. a name too long for the file system
        found = False
    if not found:
        hint = f" (named by 'extends' in {seen[-1]})" if seen else ""
        shipped = ", ".join(shipped_names(STUDIES))
        raise ConfigError(
            f"study file {str(path)!r} not found{hint}; pass a path or a shipped study: {shipped}"
        )
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"studies extend each other in a cycle ({chain}); break the cycle")
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err}); fix the syntax") from None
    except OSError as err:
        raise ConfigError(
            f"cannot read study file {str(path)!r} ({err.strerror or type(err).__name__}); "
            "check its permissions"
        ) from None
    base = tree.pop("extends", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends must be a file name string, got {base!r}")
    parent = read_study(resolve_study(base, folder=path.parent), seen=(*seen, path.resolve()))
    parent.get("study", {}).pop("name", None)  # a derived study is named after its own file
    return merge_tables(parent, tree)


def merge_tables(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: tables merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_tables(dict(out[key]), value)
        else:
            out[key] = value
    return out


__all__ = ["apply_override", "merge_tables", "parse_override", "read_study"]
