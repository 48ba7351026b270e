"""distdd-nas: architecture search for federated learning on a distilled dataset (DistDD).

The Python API (:mod:`distdd_nas.api`), re-exported here::

    import distdd_nas as dd

    study = dd.load_study("smoke", {"search.n_trials": 6}, out="runs/api-smoke")
    result = study.run()  # distill → search → validate → report, as ``distdd-nas run``
    result.search.trials  # a pandas DataFrame; result.search.best_params, ...

The names are imported on first use, so ``import distdd_nas`` (and the CLI's start) stays
cheap. The command line is :mod:`distdd_nas.cli`; shipped studies and search spaces are
package data (:mod:`distdd_nas.resources`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see (``import x as x``: an explicit re-export)
    from distdd_nas.api import DistillResult as DistillResult
    from distdd_nas.api import ReportResult as ReportResult
    from distdd_nas.api import RunResult as RunResult
    from distdd_nas.api import SearchResult as SearchResult
    from distdd_nas.api import StudyRun as StudyRun
    from distdd_nas.api import ValidateResult as ValidateResult
    from distdd_nas.api import load_study as load_study

#: The names of :mod:`distdd_nas.api` available here. Deliberately not ``__all__``: pdoc would
#: then document only these names and no submodule.
API = (
    "DistillResult",
    "ReportResult",
    "RunResult",
    "SearchResult",
    "StudyRun",
    "ValidateResult",
    "load_study",
)


def __getattr__(name: str) -> Any:
    """Import :mod:`distdd_nas.api` when one of its names is first asked for."""
    if name in API:
        return getattr(importlib.import_module("distdd_nas.api"), name)
    raise AttributeError(f"module 'distdd_nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
