"""Stage ``distill``: one global synthetic set, content-addressed in the cache, then evaluated.

The distillation itself is cached under ``CACHE/distilled/<fingerprint>/`` (synthetic.npz,
history, the ledger as comm.csv, census class counts, an image grid): one distilled set serves
any number of searches. ``DIR/distill/`` holds this study's evaluation of it (DC's protocol, plus
random real subsets of the same size as a centralized reference).

Several processes may share one cache: an exclusive lock per entry (``<fingerprint>.lock``)
covers "is it complete? → distil → write", so a second ``distill`` of the same study waits for
the first and then reuses its set (a cache hit) instead of distilling again or racing its write.
A synthetic set with NaN/Inf values is refused before it is written, so a diverged
distillation is never cached.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from distdd_nas.artifacts import (
    dumps_json,
    is_complete,
    load_json,
    load_npz,
    locked,
    read_manifest,
    stage,
    verify,
    write_atomic,
)
from distdd_nas.config import fingerprint
from distdd_nas.distill import (
    DistilledSet,
    DistillResult,
    evaluate_random_real,
    evaluate_synthetic,
)
from distdd_nas.errors import ArtifactError, DivergedError
from distdd_nas.federation import Ledger
from distdd_nas.report.plots import distilled_grid_figure
from distdd_nas.seeding import derive_seed
from distdd_nas.stages.common import (
    DISTILL_SECTIONS,
    Progress,
    StageOutcome,
    distilled_fingerprint,
    write_config,
)
from distdd_nas.stages.on_engine import on_configured_engine
from distdd_nas.study import Study

log = logging.getLogger(__name__)


def distilled_dir(study: Study, cache: Path) -> Path:
    """Content-addressed directory of a study's distilled set."""
    return cache / "distilled" / distilled_fingerprint(study.config)


def load_distilled(path: Path) -> DistilledSet:
    """Read ``synthetic.npz`` of a complete distillation directory (no pickle), after checking
    every file against its manifest's SHA-256."""
    if not is_complete(path):
        raise ArtifactError(
            f"{path} holds no complete distilled set; "
            "run 'distdd-nas distill' for this study first"
        )
    verify(path)
    return DistilledSet.from_arrays(load_npz(path / "synthetic.npz"))


def ensure_distilled(study: Study, cache: Path, *, progress: Progress | None = None) -> Path:
    """The study's cached distillation directory, distilling first on a cache miss."""
    return distill_cached(study, cache, progress=progress)[0]


def distill_cached(
    study: Study, cache: Path, *, progress: Progress | None = None
) -> tuple[Path, bool]:
    """(the study's cached distillation directory, whether it was already there).

    On a miss, distils under the entry's lock; a process that finds the lock taken waits and
    then reuses the other's result (reported as a hit). The distillation keeps its state in
    ``<fingerprint>.resume.pt`` after every outer iteration, so a run killed mid-way (even by
    SIGKILL) continues from its last finished iteration, to the same bytes.

    Raises:
        DivergedError: The synthetic set came out non-finite (nothing is cached).
    """
    path = distilled_dir(study, cache)
    fp = distilled_fingerprint(study.config)
    if is_complete(path, fp):
        return path, True

    def waiting() -> None:
        log.warning("another process is distilling into %s; waiting to reuse its result", path)

    with locked(path.with_name(path.name + ".lock"), on_wait=waiting):
        if is_complete(path, fp):
            return path, True
        study.num_parameters(study.reference)  # a bad architecture fails before any work
        total = study.config.distill.iterations

        def on_iteration(row: dict[str, float]) -> None:
            if progress is not None:
                progress("distil", int(row["iteration"]) + 1, total, row)

        resume = path.with_name(path.name + ".resume.pt")
        result, ledger = on_configured_engine(
            study, "distill", on_row=on_iteration, checkpoint=resume
        )
        try:
            check_finite(study, result)
        except DivergedError:
            resume.unlink(missing_ok=True)  # resuming would only diverge again
            raise
        _write_distilled(study, path, fp, result, ledger)
        resume.unlink(missing_ok=True)
    return path, False


def check_finite(study: Study, result: DistillResult) -> None:
    """Refuse a synthetic set holding NaN/Inf (a diverged distillation) before it is cached.

    Raises:
        DivergedError: Names the settings that drive the images' updates and the fix.
    """
    images = result.synthetic.images
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        d = study.config.distill
        raise DivergedError(
            f"distillation diverged: {bad} of {images.numel()} synthetic pixel values are "
            f"NaN/Inf (distill.lr_img={d.lr_img}, distill.momentum_img={d.momentum_img}, "
            f"distill.lr_net={d.lr_net}); nothing was cached; lower distill.lr_img and re-run"
        )


def _write_distilled(
    study: Study, path: Path, fp: str, result: DistillResult, ledger: Ledger
) -> None:
    counts = pd.DataFrame(result.client_class_counts).rename_axis("client").reset_index()
    meta = {
        "stage": "distill",
        "wall_s": result.wall_s,
        "bytes_up": ledger.bytes_up,
        "bytes_down": ledger.bytes_down,
        **result.privacy,
    }
    like = study.federation.train
    with stage(path, fingerprint=fp, meta=meta) as w:
        w.npz("synthetic.npz", result.synthetic.to_arrays())
        w.csv("history.csv", result.history)
        w.csv("comm.csv", ledger.to_frame())
        w.csv("class_counts.csv", counts)
        fig = distilled_grid_figure(
            result.synthetic, mean=like.mean, std=like.std, classes=like.classes
        )
        fig.savefig(w.file("grid.png"), dpi=100, bbox_inches="tight")


def run_distill_stage(
    study: Study, out: Path, *, cache: Path, progress: Progress | None = None
) -> StageOutcome:
    """Distil (or reuse the cached distillation), evaluate it, write ``DIR/distill/``."""
    start = time.perf_counter()
    config = study.config
    fp = fingerprint(config, DISTILL_SECTIONS)
    cached, hit = distill_cached(study, cache, progress=progress)
    manifest = read_manifest(cached) or {}
    summary = evaluation_cached(study, cached, progress=progress)
    summary.update(
        {
            "ipc": config.distill.ipc,
            "iterations": config.distill.iterations,
            "num_clients": study.federation.num_clients,
            "bytes_up": int(manifest.get("bytes_up", 0)),
            "bytes_down": int(manifest.get("bytes_down", 0)),
            "distill_wall_s": float(manifest.get("wall_s", 0.0)),
            **{k: v for k, v in manifest.items() if k.startswith("dp_")},
            "cache_hit": hit,
            "artifact": str(cached),
            "fingerprint": fp,
            "wall_s": time.perf_counter() - start,
        }
    )
    write_config(config, out)
    path = out / "distill"
    with stage(path, fingerprint=fp) as w:
        w.json("summary.json", summary)
        w.csv("history.csv", pd.read_csv(cached / "history.csv"))
        w.csv("ledger.csv", pd.read_csv(cached / "comm.csv"))
    return StageOutcome(path, summary)


#: Keys of an evaluation record (a cached record lacking one is recomputed).
EVALUATION_KEYS = ("test_accuracy_mean", "test_accuracies", "random_real_accuracy_mean")


def evaluation_cached(
    study: Study, cached: Path, *, progress: Progress | None = None
) -> dict[str, Any]:
    """The distilled set's evaluation, kept beside the set in the cache: ``<entry>.eval-<fp>
    .json``, keyed by the evaluation protocol (``distill.eval``) and the thread count, so a
    second ``run`` (or another run directory sharing the cache) trains no network twice. A
    missing or unreadable record is recomputed (it is derived data)."""
    record = cached.with_name(f"{cached.name}.eval-{evaluation_fingerprint(study)}.json")
    verify(cached)  # a record speaks for the set only while the set is what was written
    try:
        summary = load_json(record)
        if isinstance(summary, dict) and all(k in summary for k in EVALUATION_KEYS):
            return {**summary, "evaluation_cache_hit": True}
    except ArtifactError:
        pass
    summary = evaluate_distilled(study, load_distilled(cached), progress=progress)
    write_atomic(record, dumps_json(summary))
    return {**summary, "evaluation_cache_hit": False}


def evaluation_fingerprint(study: Study) -> str:
    """What an evaluation of a distilled set depends on beyond the set: the protocol and the
    thread count (float rounding)."""
    return fingerprint(
        study.config,
        (),
        extra={
            "eval": study.config.distill.eval.model_dump(mode="json"),
            "threads": torch.get_num_threads(),
        },
    )


def evaluate_distilled(
    study: Study, synthetic: DistilledSet, *, progress: Progress | None = None
) -> dict[str, Any]:
    """DC's evaluation of the synthetic set plus same-ipc random real subsets (a centralized
    reference: the server never holds real data; labelled as such)."""
    config, fed = study.config, study.federation
    seed = config.study.seed
    total = 2 * config.distill.eval.num_models
    trained: list[float] = []

    def on_model(accuracy: float) -> None:
        trained.append(accuracy)
        if progress is not None:
            progress("evaluate", len(trained), total, {"test_accuracy": accuracy})

    if progress is not None:
        progress("evaluate", 0, total, {})
    mean, std, accs = evaluate_synthetic(
        synthetic.images,
        synthetic.labels,
        arch=study.reference,
        test=fed.test,
        settings=config.distill.eval,
        seed=derive_seed(seed, "eval", "synthetic"),
        on_model=on_model,
    )
    r_mean, r_std, r_accs = evaluate_random_real(
        fed.train,
        np.concatenate(fed.split.client_indices),
        ipc=config.distill.ipc,
        arch=study.reference,
        test=fed.test,
        settings=config.distill.eval,
        seed=derive_seed(seed, "eval", "random_real"),
        on_model=on_model,
    )
    return {
        "test_accuracy_mean": mean,
        "test_accuracy_std": std,
        "test_accuracies": accs,
        "random_real_accuracy_mean": r_mean,
        "random_real_accuracy_std": r_std,
        "random_real_accuracies": r_accs,
        "random_real_note": (
            "centralized reference: random real subsets with the same ipc, a fresh one per network"
        ),
        "eval_models": config.distill.eval.num_models,
        "eval_epochs": config.distill.eval.epochs,
    }
