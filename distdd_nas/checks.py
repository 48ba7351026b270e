"""Checks before the first expensive stage: everything a command will need, validated cheaply.

The CLI calls :func:`check_command` right after loading the config and before any stage runs,
so a bad search space, sampler, storage URL, output path or oversized model fails in seconds
with one :class:`~distdd_nas.errors.ConfigError` line naming the key (or option) and the fix,
instead of after a distillation and after ``config.json`` was rewritten. Nothing here loads
data, trains, connects to a database or leaves a file behind: directories are probed with a
temporary subdirectory that is removed at once, the reference model is built on PyTorch's
``meta`` device (no memory) over the dataset's known image shape, and a storage URL is only
parsed and its driver imported.

What each command needs is :data:`NEEDS`; the checks of config values themselves (types,
ranges, finite floats, a safe ``study.name``) happen earlier, when the config is validated.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import torch

from distdd_nas.config import StudyConfig
from distdd_nas.data.datasets import IMAGE_SHAPES
from distdd_nas.errors import ConfigError, MissingDependencyError
from distdd_nas.models import build_model, count_parameters
from distdd_nas.search.backends import check_backend
from distdd_nas.search.fedavg_objective import require_fedavg_search
from distdd_nas.study import Study

#: Largest reference model a run accepts (every client trains a copy; 100 M float32 parameters
#: are 400 MB per copy). A ``model.width`` typo beyond it fails at once, not with MemoryError.
MAX_PARAMETERS = 100_000_000

#: What each command needs besides ``--out``: ``cache`` (a writable ``--cache``), ``model`` (the
#: reference model builds), ``distill`` (DistDD settings), ``space`` (the search space loads),
#: ``search`` (backend, sampler, pruner and storage fit together).
NEEDS: dict[str, frozenset[str]] = {
    "partition": frozenset(),
    "fedavg": frozenset({"model"}),
    "distill": frozenset({"cache", "model", "distill"}),
    "search": frozenset({"cache", "model", "distill", "space", "search"}),
    "validate": frozenset({"model", "space", "validation"}),
    "report": frozenset(),
    "groundtruth": frozenset({"model", "space"}),
    "run": frozenset({"cache", "model", "distill", "space", "search", "validation"}),
}


def check_command(study: Study, command: str, *, out: Path, cache: Path | None = None) -> None:
    """Validate what ``command`` will need, cheapest first; raise one ConfigError line.

    The search space is loaded through :attr:`Study.space`, so the stage reuses it.

    Raises:
        ConfigError: A path that cannot be a writable directory, a space that does not load, a
            sampler/pruner/storage that does not fit the backend, a model that does not build
            on the dataset's images or is too large, or invalid DistDD settings.
        MissingDependencyError: A sampler, backend or storage driver that is not installed.
    """
    config = study.config
    needs = set(NEEDS.get(command, frozenset()))
    if config.search.objective == "fedavg" and command == "search":
        needs -= {"cache", "distill"}  # the FedAvg-based search trains on the clients only
    check_directory(out, "--out")
    if "cache" in needs and cache is not None:
        check_directory(cache, "--cache")
    if "distill" in needs:
        from distdd_nas.distill.server import check_settings

        check_settings(config.distill)
    if "model" in needs:
        check_model(config)
    if "space" in needs:
        try:
            _ = study.space
        except ConfigError as err:
            raise type(err)(f"search.space: {err}") from None
    if "search" in needs:
        check_search(study)
    if "validation" in needs:
        check_validation(study)


def check_validation(study: Study) -> None:
    """Refuse to validate a space whose candidates FedAvg cannot tell apart.

    Parameters ``train.*`` shape how the proxy trains on the distilled set; FedAvg never reads
    them, so if a space searches nothing else every validated candidate is the same FedAvg run
    and the ranking figures are meaningless (τ undefined).

    Raises:
        ConfigError: Names the space and the two ways out.
    """
    space = study.space
    if space.params and all(p.name.startswith("train.") for p in space.params):
        raise ConfigError(
            f"search.space {space.name!r} searches only train.* parameters (how the proxy "
            "trains on the distilled set), which FedAvg never uses, so validation would train "
            "the same model for every candidate; run 'distdd-nas search' alone, or use a space "
            "with arch.* or fedavg.* parameters"
        )


def check_directory(path: Path, what: str, *, fix: str | None = None) -> None:
    """``path`` is a directory, or can be created as one, and files can be created in it.

    Walks up to the nearest existing ancestor (a file there is an error), then creates and
    removes a temporary subdirectory in it: that is the only reliable test (root passes every
    ``os.access`` check, yet cannot create anything under ``/proc``).

    Raises:
        ConfigError: ``path`` or an ancestor names a file, or nothing can be created there.
    """
    path = Path(path)
    fix = fix or f"pass a writable directory as {what}"
    probe = path
    try:
        while not probe.exists() and probe.parent != probe:
            if probe.is_symlink():
                raise ConfigError(f"{what} {str(path)!r}: {probe} is a broken link; {fix}")
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as err:  # a name too long, a loop of links
        raise ConfigError(f"{what} {str(path)!r} is unusable ({err.strerror}); {fix}") from None
    if not is_dir:
        where = "is a file" if probe == path else f"is under {str(probe)!r}, a file"
        raise ConfigError(f"{what} {str(path)!r} {where}, not a directory; {fix}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".distdd-check-", dir=probe))
    except OSError as err:
        raise ConfigError(
            f"{what} {str(path)!r}: cannot create anything in {str(probe)!r} "
            f"({err.strerror or type(err).__name__}); {fix}"
        ) from None


def check_model(config: StudyConfig) -> int:
    """Build the reference model on the ``meta`` device over the dataset's image shape (no
    data, no memory) and return its parameter count.

    Raises:
        ConfigError: The architecture does not fit the images, or has more than
            :data:`MAX_PARAMETERS` parameters.
    """
    from distdd_nas.models import ArchSpec

    shape, num_classes = IMAGE_SHAPES[config.data.name]
    try:
        spec = ArchSpec.from_dict(config.model.model_dump())
        with torch.device("meta"):
            model = build_model(spec, input_shape=shape, num_classes=num_classes)
    except ConfigError as err:
        raise type(err)(f"model: {err}") from None
    n = count_parameters(model)
    if n > MAX_PARAMETERS:
        keys = "model.hidden or model.depth" if spec.family == "mlp" else "model.width/depth"
        raise ConfigError(
            f"the reference model {spec.short_name()} has {n:,} parameters on "
            f"{config.data.name} images, more than the {MAX_PARAMETERS:,} a run accepts (every "
            f"client trains a copy); lower {keys}"
        )
    return n


def check_search(study: Study) -> None:
    """Backend, objective, sampler, pruner and storage fit together (the space is loaded).

    Raises:
        ConfigError: A name the backend does not know, FedAvg-based search off Optuna, or a
            storage URL that does not parse or whose file cannot be created.
        MissingDependencyError: NNI, a sampler's package or the storage's driver is missing.
    """
    sc = study.config.search
    check_backend(sc.backend)
    if sc.objective == "fedavg":
        require_fedavg_search(backend=sc.backend, engine=study.config.federation.engine)
    if sc.backend == "nni":
        _check_nni(sc.sampler, sc.pruner)
        return
    from distdd_nas.search.backends.optuna_samplers import (
        PRUNERS,
        SAMPLERS,
        make_pruner,
        make_sampler,
    )

    for key, name, known in (("sampler", sc.sampler, SAMPLERS), ("pruner", sc.pruner, PRUNERS)):
        if name not in known:
            raise ConfigError(
                f"search.{key} = {name!r} does not fit search.backend = 'optuna'; choose one "
                f"of {', '.join(known)}"
            )
    try:
        make_sampler(sc.sampler, seed=study.config.study.seed, space=study.space)
        make_pruner(sc.pruner)
    except ConfigError as err:
        raise type(err)(f"search.sampler: {err}") from None
    check_storage(sc.storage)


def _check_nni(sampler: str, pruner: str) -> None:
    from distdd_nas.search.backends.nni import PRUNERS
    from distdd_nas.search.backends.nni_tuner import TUNERS

    for key, name, known in (("sampler", sampler, TUNERS), ("pruner", pruner, PRUNERS)):
        if name not in known:
            raise ConfigError(
                f"search.{key} = {name!r} does not fit search.backend = 'nni'; choose one of "
                f"{', '.join(known)}"
            )
    if importlib.util.find_spec("nni") is None:
        raise MissingDependencyError(
            "search.backend = 'nni' needs the nni extra; pip install -e '.[nni]' or set "
            'search.backend = "optuna"'
        )


def check_storage(url: str | None) -> None:
    """``search.storage`` parses, its driver imports, and a file it names can be created.

    ``None`` (the run's own SQLite file, under ``--out``) passes. Nothing connects: a
    PostgreSQL server is reached only by the search itself.

    Raises:
        ConfigError: Not a URL Optuna can open, or a SQLite/journal file in an unusable place.
        MissingDependencyError: The database driver is not installed.
    """
    if url is None:
        return
    fix = "write sqlite:///path.db, journal:///abs/path.log or postgresql+psycopg2://user@host/db"
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        if not path.name:
            raise ConfigError(f"search.storage {url!r} names no file; {fix}")
        _check_file(path, url)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise ConfigError(f"search.storage {url!r} is not a storage URL; {fix}") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise MissingDependencyError(
            f"search.storage {url!r} needs a database driver ({err}); install it (PostgreSQL: "
            "pip install -e '.[postgres]')"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_file(Path(parsed.database), url)


def _check_file(path: Path, url: str) -> None:
    """A storage file: not a directory, and its directory usable."""
    if path.is_dir():
        raise ConfigError(
            f"search.storage {url!r} names a directory; name a file such as {path / 'optuna.db'}"
        )
    check_directory(
        path.parent,
        "the storage directory (search.storage)",
        fix="point search.storage at a file in a writable directory",
    )


__all__ = [
    "MAX_PARAMETERS",
    "NEEDS",
    "check_command",
    "check_directory",
    "check_model",
    "check_search",
    "check_storage",
]
