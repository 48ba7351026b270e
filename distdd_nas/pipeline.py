"""Stages of a study: wire the pure cores to files. The only module (with the CLI) that knows paths.

Each stage function takes a validated :class:`StudyConfig`, an output directory and an optional
progress callback, runs the pure cores, and writes its directory atomically through
:func:`distdd_nas.artifacts.stage` (manifest last). Layout of a run directory::

    runs/<study>/config.json          resolved configuration
    runs/<study>/partition/           summary.json, class_counts.csv, noise.csv
    runs/<study>/fedavg/              summary.json, history.csv, ledger.csv
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distdd_nas.artifacts import is_complete, load_npz, read_manifest, stage
from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.data import ImageDataset
from distdd_nas.distill.evaluate import evaluate_synthetic, random_real_subset
from distdd_nas.distill.loop import run_distill
from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ArtifactError
from distdd_nas.federation import Engine, InProcessEngine
from distdd_nas.federation.registry import default_tasks
from distdd_nas.federation.setup import Federation, build_federation
from distdd_nas.fl.fedavg import FedAvgSettings, run_fedavg
from distdd_nas.models import ArchSpec, build_model, count_parameters
from distdd_nas.report.plots import image_grid_figure
from distdd_nas.seeding import derive_seed
from distdd_nas.training import TrainSettings

log = logging.getLogger(__name__)

#: Progress callback: (steps done, steps total, latest metrics).
Progress = Callable[[int, int, dict[str, float]], None]

PARTITION_SECTIONS = ("study", "data", "partition", "noise")


@dataclass(frozen=True)
class StageOutcome:
    """What a stage wrote: its directory and the summary it stored as summary.json."""

    path: Path
    summary: dict[str, Any]


def reference_arch(config: StudyConfig) -> ArchSpec:
    """The study's reference architecture as an :class:`ArchSpec`."""
    return ArchSpec.from_dict(config.model.model_dump())


def fedavg_settings(config: StudyConfig) -> FedAvgSettings:
    """FedAvg server settings from the ``fedavg`` and ``federation`` sections."""
    f = config.fedavg
    return FedAvgSettings(
        rounds=f.rounds,
        local=TrainSettings(
            epochs=f.local_epochs,
            lr=f.lr,
            momentum=f.momentum,
            weight_decay=f.weight_decay,
            batch_size=f.batch_size,
            max_steps=f.local_steps,
        ),
        server_lr=f.server_lr,
        prox_mu=f.prox_mu,
        fraction=config.federation.fraction,
        aggregator=f.aggregator,
        trim=f.trim,
        eval_every=f.eval_every,
    )


def make_engine(config: StudyConfig, federation: Federation) -> Engine:
    """The in-process engine over the federation's clients (Flower runs through its own apps)."""
    return InProcessEngine(
        clients=federation.clients,
        tasks=default_tasks(),
        failure_rate=config.federation.failure_rate,
        seed=config.study.seed,
    )


def write_config(config: StudyConfig, out: Path) -> None:
    """Write the resolved configuration beside the outputs (plain JSON, with its fingerprint)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"fingerprint": fingerprint(config), **config.to_dict()}
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out / "config.json")


def check_model_fits(config: StudyConfig, federation: Federation) -> int:
    """Build the reference model once so a bad architecture fails before any work; return d."""
    model = build_model(
        reference_arch(config),
        input_shape=federation.train.input_shape,
        num_classes=federation.num_classes,
    )
    return count_parameters(model)


# --------------------------------------------------------------------------------------------
# partition
# --------------------------------------------------------------------------------------------


def run_partition(config: StudyConfig, out: Path) -> StageOutcome:
    """Partition the data over clients and write the class-count and noise tables."""
    start = time.perf_counter()
    fed = build_federation(config)
    counts = fed.class_counts()
    sizes = counts.sum(axis=1)
    noise = fed.noise
    changed = noise.changed_per_client
    noise_table = pd.DataFrame({
        "client": range(fed.num_clients),
        "noisy": [c in noise.noisy_clients for c in range(fed.num_clients)],
        "labels_changed": [int(changed.get(c, 0)) for c in range(fed.num_clients)],
    })
    summary = {
        "dataset": config.data.name,
        "method": config.partition.method,
        "num_clients": fed.num_clients,
        "num_classes": fed.num_classes,
        "train_examples": int(sizes.sum()),
        "holdout_examples": int(sum(len(h) for h in fed.holdout.client_indices)),
        "test_examples": len(fed.test),
        "client_size_min": int(sizes.min()),
        "client_size_max": int(sizes.max()),
        "classes_per_client_mean": float((counts > 0).sum(axis=1).mean()),
        "noise_kind": noise.kind,
        "noisy_clients": list(noise.noisy_clients),
        "labels_changed": int(sum(changed.values())),
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    path = out / "partition"
    with stage(path, fingerprint=fingerprint(config, PARTITION_SECTIONS)) as w:
        w.json("summary.json", summary)
        w.csv("class_counts.csv", counts.reset_index())
        w.csv("noise.csv", noise_table)
    return StageOutcome(path, summary)


# --------------------------------------------------------------------------------------------
# fedavg
# --------------------------------------------------------------------------------------------


def run_fedavg_stage(config: StudyConfig, out: Path, *, progress: Progress | None = None) -> StageOutcome:
    """Train the reference model with FedAvg on the clients; write history, ledger, summary."""
    start = time.perf_counter()
    fed = build_federation(config)
    num_params = check_model_fits(config, fed)
    engine = make_engine(config, fed)
    settings = fedavg_settings(config)

    def on_round(row: dict[str, float]) -> None:
        if progress is not None:
            progress(int(row["round"]), settings.rounds, row)

    try:
        result = run_fedavg(
            engine,
            arch=reference_arch(config),
            test=fed.test,
            settings=settings,
            seed=config.study.seed,
            on_round=on_round,
        )
    finally:
        engine.close()
    ledger = engine.ledger
    summary = {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "rounds": result.rounds,
        "num_clients": fed.num_clients,
        "clients_per_round": int(result.history["clients"].mean()),
        "model": reference_arch(config).short_name(),
        "num_parameters": num_params,
        "bytes_up": ledger.bytes_up,
        "bytes_down": ledger.bytes_down,
        "bytes_per_round": (ledger.bytes_up + ledger.bytes_down) / result.rounds,
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    path = out / "fedavg"
    with stage(path, fingerprint=fingerprint(config, (*PARTITION_SECTIONS, "model", "federation", "fedavg"))) as w:
        w.json("summary.json", summary)
        w.csv("history.csv", result.history)
        w.csv("ledger.csv", ledger.to_frame())
    return StageOutcome(path, summary)


# --------------------------------------------------------------------------------------------
# distill
# --------------------------------------------------------------------------------------------

DISTILL_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "distill")


def distilled_dir(config: StudyConfig, cache: Path) -> Path:
    """Content-addressed directory of a study's distilled set: one set serves many searches."""
    return cache / "distilled" / fingerprint(config, DISTILL_SECTIONS)


def load_distilled(path: Path) -> DistilledSet:
    """Read ``synthetic.npz`` of a complete distillation directory (no pickle)."""
    if not is_complete(path):
        raise ArtifactError(
            f"{path} holds no complete distilled set; run 'distdd-nas distill' for this study first"
        )
    return DistilledSet.from_arrays(load_npz(path / "synthetic.npz"))


def run_distill_stage(
    config: StudyConfig, out: Path, *, cache: Path, progress: Progress | None = None
) -> StageOutcome:
    """Distil (or reuse the cached distillation), evaluate it, write ``DIR/distill/``."""
    start = time.perf_counter()
    fed = build_federation(config)
    check_model_fits(config, fed)
    arch = reference_arch(config)
    fp = fingerprint(config, DISTILL_SECTIONS)
    cached = distilled_dir(config, cache)
    hit = is_complete(cached, fp)
    if not hit:
        engine = make_engine(config, fed)
        settings = config.distill
        total = settings.iterations

        def on_iteration(row: dict[str, float]) -> None:
            if progress is not None:
                progress(int(row["iteration"]) + 1, total, row)

        try:
            result = run_distill(
                engine, arch=arch, input_shape=fed.train.input_shape,
                num_classes=fed.num_classes, settings=settings,
                fraction=config.federation.fraction, seed=config.study.seed,
                on_iteration=on_iteration,
            )
        finally:
            engine.close()
        counts = pd.DataFrame(result.client_class_counts).rename_axis("client").reset_index()
        with stage(cached, fingerprint=fp, meta={"stage": "distill", "wall_s": result.wall_s,
                                                  "bytes_up": engine.ledger.bytes_up,
                                                  "bytes_down": engine.ledger.bytes_down}) as w:
            w.npz("synthetic.npz", result.synthetic.to_arrays())
            w.csv("history.csv", result.history)
            w.csv("comm.csv", engine.ledger.to_frame())
            w.csv("class_counts.csv", counts)
            save_image_grid(result.synthetic, fed.train, w.file("grid.png"))
    manifest = read_manifest(cached) or {}
    synthetic = load_distilled(cached)
    summary = evaluate_distilled_summary(config, fed, synthetic)
    summary.update({
        "ipc": config.distill.ipc,
        "iterations": config.distill.iterations,
        "num_clients": fed.num_clients,
        "bytes_up": int(manifest.get("bytes_up", 0)),
        "bytes_down": int(manifest.get("bytes_down", 0)),
        "distill_wall_s": float(manifest.get("wall_s", 0.0)),
        "cache_hit": hit,
        "artifact": str(cached),
        "fingerprint": fp,
        "wall_s": time.perf_counter() - start,
    })
    write_config(config, out)
    path = out / "distill"
    with stage(path, fingerprint=fp) as w:
        w.json("summary.json", summary)
        w.csv("history.csv", pd.read_csv(cached / "history.csv"))
        w.csv("ledger.csv", pd.read_csv(cached / "comm.csv"))
    return StageOutcome(path, summary)


def evaluate_distilled_summary(
    config: StudyConfig, fed: Federation, synthetic: DistilledSet
) -> dict[str, Any]:
    """DC's evaluation of the synthetic set plus a same-ipc random real subset (centralized
    reference: the server never holds real data; labelled as such)."""
    arch = reference_arch(config)
    seed = config.study.seed
    mean, std, accs = evaluate_synthetic(
        synthetic.images, synthetic.labels, arch=arch, test=fed.test,
        settings=config.distill.eval, seed=derive_seed(seed, "eval", "synthetic"),
    )
    pool = np.concatenate(fed.split.client_indices)
    real_x, real_y = random_real_subset(
        fed.train, pool, ipc=config.distill.ipc, num_classes=fed.num_classes,
        seed=derive_seed(seed, "eval", "random_real"),
    )
    r_mean, r_std, _ = evaluate_synthetic(
        real_x, real_y, arch=arch, test=fed.test, settings=config.distill.eval,
        seed=derive_seed(seed, "eval", "random_real_nets"),
    )
    return {
        "test_accuracy_mean": mean,
        "test_accuracy_std": std,
        "test_accuracies": accs,
        "random_real_accuracy_mean": r_mean,
        "random_real_accuracy_std": r_std,
        "random_real_note": "centralized reference: a random real subset with the same ipc",
        "eval_models": config.distill.eval.num_models,
        "eval_epochs": config.distill.eval.epochs,
    }


def save_image_grid(synthetic: DistilledSet, like: ImageDataset, path: Path) -> None:
    """A PNG grid of the synthetic images, one row per class, de-normalised for viewing."""
    fig = image_grid_figure(synthetic.images, synthetic.labels, mean=like.mean, std=like.std,
                            classes=like.classes)
    fig.savefig(path, dpi=100, bbox_inches="tight")


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------

STAGES = ("partition", "fedavg", "distill", "search", "validate", "report")


def inspect_run(out: Path) -> dict[str, Any]:
    """Summarise a run directory: the study, and for each stage whether it is complete plus its
    summary. Raises ArtifactError when ``out`` is not a run directory."""
    config_path = out / "config.json"
    if not config_path.is_file():
        raise ArtifactError(
            f"{out} is not a run directory (no config.json); pass the --out DIR of a run, "
            "e.g. runs/smoke"
        )
    from distdd_nas.artifacts import load_json

    config = load_json(config_path)
    stages: dict[str, Any] = {}
    for name in STAGES:
        path = out / name
        if not path.exists():
            continue
        complete = is_complete(path)
        summary = load_json(path / "summary.json") if complete else None
        stages[name] = {"complete": complete, "summary": summary}
    return {"study": config.get("study", {}).get("name"), "fingerprint": config.get("fingerprint"),
            "stages": stages}
