"""The proxy objective as files: what NNI trial processes (or extra workers) load.

:func:`save_proxy_inputs` writes everything a :class:`~distdd_nas.search.objective.ProxyObjective`
needs (the distilled set, the server holdout, settings, census counts, and for federated scoring
the study config) and returns an :class:`~distdd_nas.search.backends.ObjectiveRecipe` naming
:func:`load_proxy_objective`, which rebuilds the identical objective in another process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distdd_nas.artifacts import write_atomic
from distdd_nas.data import ImageDataset
from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ArtifactError, ConfigError
from distdd_nas.fedavg import FedAvgSettings
from distdd_nas.federation import Engine
from distdd_nas.search.backends.base import ObjectiveRecipe
from distdd_nas.search.candidate import CandidateFactory
from distdd_nas.search.objective import ProxyObjective, ProxyScorer
from distdd_nas.training import TrainSettings

PROXY_FACTORY = "distdd_nas.stages.proxy_files:load_proxy_objective"


def save_proxy_inputs(
    directory: str | Path,
    *,
    objective: ProxyObjective,
    study_config: Mapping[str, Any] | None = None,
) -> ObjectiveRecipe:
    """Write what ``objective`` needs to ``directory``; return the recipe that rebuilds it.

    Files: ``synthetic.npz`` (the distilled set), ``holdout.npz`` (server holdout, if any),
    ``proxy.json`` (metadata, settings, class counts, and for federated scoring the study
    config from which a trial process rebuilds the clients and an in-process engine).

    Raises:
        ConfigError: Federated scoring without ``study_config``.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    s = objective.scorer
    if s.scoring == "federated" and study_config is None:
        raise ConfigError(
            "a portable federated objective needs the study config (to rebuild "
            "the clients in the trial process); pass study_config=config.to_dict()"
        )
    arrays: dict[str, Any] = s.distilled.to_arrays()
    np.savez(directory / "synthetic.npz", **arrays)
    if s.holdout is not None:
        np.savez(
            directory / "holdout.npz",
            images=s.holdout.images.numpy(),
            labels=s.holdout.labels.numpy(),
        )
    counts = s.client_class_counts
    meta = {
        "like": {
            "name": s.like.name,
            "classes": list(s.like.classes),
            "mean": list(s.like.mean),
            "std": list(s.like.std),
        },
        "scoring": s.scoring,
        "holdout": s.holdout is not None,
        "client_class_counts": None if counts is None else np.asarray(counts).tolist(),
        "fedavg": {**asdict(s.fedavg), "local": asdict(s.fedavg.local)},
        "seed": s.seed,
        "seeds": s.seeds,
        "report_every": s.report_every,
        "intermediate": s.intermediate,
        "virtual_examples": s.virtual_examples,
        "virtual_steps": s.virtual_steps,
        "candidates": objective.candidates.to_dict(),
        "study_config": dict(study_config) if s.scoring == "federated" and study_config else None,
    }
    path = directory / "proxy.json"
    write_atomic(path, json.dumps(meta, indent=1, sort_keys=True))
    return ObjectiveRecipe(factory=PROXY_FACTORY, kwargs={"path": str(path)})


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ArtifactError(
            f"{path} is missing; re-run the search so the backend rewrites its inputs"
        )
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_proxy_objective(*, path: str) -> ProxyObjective:
    """Rebuild the :class:`ProxyObjective` written by :func:`save_proxy_inputs`.

    Raises:
        ArtifactError: A file is missing or malformed.
    """
    meta_path = Path(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(
            f"cannot read proxy inputs {meta_path} ({err}); re-run the search"
        ) from None
    distilled = DistilledSet.from_arrays(_load_npz(meta_path.parent / "synthetic.npz"))
    like_meta = meta["like"]
    like = ImageDataset(
        like_meta["name"],
        distilled.images,
        distilled.labels,
        tuple(like_meta["classes"]),
        tuple(like_meta["mean"]),
        tuple(like_meta["std"]),
    )
    holdout = None
    if meta["holdout"]:
        arrays = _load_npz(meta_path.parent / "holdout.npz")
        holdout = replace(
            like,
            images=torch.from_numpy(arrays["images"]),
            labels=torch.from_numpy(arrays["labels"]),
        )
    engine = None
    if meta["scoring"] == "federated":
        engine = _engine_from_config(meta["study_config"])
    fed = dict(meta["fedavg"])
    fed["local"] = TrainSettings(**fed["local"])
    counts = meta["client_class_counts"]
    scorer = ProxyScorer(
        distilled=distilled,
        like=like,
        scoring=meta["scoring"],
        holdout=holdout,
        engine=engine,
        client_class_counts=None if counts is None else np.asarray(counts, dtype=np.int64),
        fedavg=FedAvgSettings(**fed),
        seed=int(meta["seed"]),
        seeds=int(meta["seeds"]),
        report_every=meta["report_every"],
        intermediate=bool(meta.get("intermediate", False)),
        virtual_examples=meta["virtual_examples"],
        virtual_steps=meta.get("virtual_steps", "scaled"),
    )
    return ProxyObjective(scorer=scorer, candidates=CandidateFactory.from_dict(meta["candidates"]))


def _engine_from_config(config: Mapping[str, Any]) -> Engine:
    """The study's clients behind an in-process engine (federated scoring in a trial process)."""
    from distdd_nas.config import from_dict
    from distdd_nas.study import Study

    return Study(from_dict(config, source="proxy inputs")).make_engine()
