"""Stage ``partition``: spread the data over clients; write class-count and label-noise tables."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from distdd_nas.artifacts import stage
from distdd_nas.config import fingerprint
from distdd_nas.stages.common import PARTITION_SECTIONS, StageOutcome, write_config
from distdd_nas.study import Study


def run_partition(study: Study, out: Path) -> StageOutcome:
    """Partition the data over clients and write the class-count and noise tables."""
    start = time.perf_counter()
    config = study.config
    fed = study.federation
    counts = fed.class_counts()
    sizes = counts.sum(axis=1)
    noise = fed.noise
    changed = noise.changed_per_client
    noise_table = pd.DataFrame(
        {
            "client": range(fed.num_clients),
            "noisy": [c in noise.noisy_clients for c in range(fed.num_clients)],
            "labels_changed": [int(changed.get(c, 0)) for c in range(fed.num_clients)],
        }
    )
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
