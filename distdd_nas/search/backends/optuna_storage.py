"""Optuna storages by URL, for :class:`~distdd_nas.search.backends.optuna.OptunaBackend`.

URLs:

* ``sqlite:///path/optuna.db`` — the default, under the run's ``search/`` directory;
* ``journal:///abs/path/optuna.log`` (or ``journal://relative/path.log``) — Optuna's
  :class:`~optuna.storages.JournalStorage` on a journal file with an open-file lock: several
  local worker processes on one study, no database;
* any SQLAlchemy URL, e.g. ``postgresql+psycopg2://user@127.0.0.1:5432/db`` — many machines.

Every URL also opens in ``optuna-dashboard`` (journal files as the plain path). Optuna's own
functions do not know the ``journal://`` scheme: pass ``make_storage(url)`` to them, e.g.
``optuna.get_all_study_names(make_storage(url))``. Workers that start together race to create
an RDB schema; :func:`make_storage` retries the losers, so any number may start at once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna

from distdd_nas.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

#: Attempts to open an RDB storage (concurrent workers race to create its tables).
STORAGE_ATTEMPTS = 5


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """Storage from a URL; ``journal://<path>`` selects the journal-file backend.

    Raises:
        ConfigError: The URL cannot be opened (bad scheme, unreachable server, bad path).
    """
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        if not path.name:
            raise ConfigError(
                f"journal storage {url!r} names no file; write journal:///abs/path/optuna.log"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except ImportError as err:
            raise MissingDependencyError(
                f"storage {url!r} needs a database driver ({err}); "
                "install it, e.g. pip install -e '.[postgres]'"
            ) from None
        except Exception as err:  # SQLAlchemy raises many kinds (ArgumentError, IntegrityError…)
            # Workers that start together race to create the schema; the losers retry.
            if (
                type(err).__name__ in ("IntegrityError", "OperationalError", "ProgrammingError")
                and attempt + 1 < STORAGE_ATTEMPTS
            ):
                log.info("opening %s failed (%s); retrying", url, type(err).__name__)
                time.sleep(0.2 * (attempt + 1))
                continue
            first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise ConfigError(
                f"cannot open search storage {url!r} ({type(err).__name__}: "
                f"{first}); check search.storage (sqlite:///…, journal:///…, "
                "postgresql://…)"
            ) from None
    raise AssertionError("unreachable")


__all__ = ["STORAGE_ATTEMPTS", "make_storage"]
