"""One exception hierarchy for everything a user can get wrong.

Every message names the problem *and* the fix, in one line, so the CLI can print it verbatim
(``distdd-nas: error: <message>``) and exit with code 2 without a traceback. Library code raises;
only :mod:`distdd_nas.cli` turns these into exit codes.
"""

from __future__ import annotations


class DistddError(Exception):
    """Base class of every user-facing error of distdd-nas (CLI exit code 2)."""


class ConfigError(DistddError):
    """A study file, ``--set`` override or argument is invalid."""


class DataError(DistddError):
    """A dataset is missing, unreadable, or cannot be partitioned as asked."""


class ArtifactError(DistddError):
    """A stage directory or artifact file is missing, corrupt or from another study."""


class SearchSpaceError(ConfigError):
    """A search-space file declares an invalid parameter."""


class EngineError(DistddError):
    """A federation engine could not run a round (no clients, unknown task, transport failure)."""


class MissingDependencyError(DistddError):
    """An optional extra (nni, flower, postgres) is needed but not installed."""


class DivergedError(DistddError):
    """A computation produced non-finite values (NaN/Inf); its result is not kept or cached."""
