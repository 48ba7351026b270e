"""Stage ``fedavg``: FedAvg of the study's reference model; history, ledger and summary."""

from __future__ import annotations

import time
from pathlib import Path

from distdd_nas.artifacts import stage
from distdd_nas.config import fingerprint
from distdd_nas.stages.common import FEDAVG_SECTIONS, Progress, StageOutcome, write_config
from distdd_nas.stages.on_engine import on_configured_engine
from distdd_nas.study import Study


def run_fedavg_stage(study: Study, out: Path, *, progress: Progress | None = None) -> StageOutcome:
    """Train the reference model with FedAvg on the clients; write history, ledger, summary."""
    start = time.perf_counter()
    config = study.config
    num_params = study.num_parameters(study.reference)
    rounds = study.fedavg_settings.rounds

    def on_round(row: dict[str, float]) -> None:
        if progress is not None:
            progress("fedavg", int(row["round"]), rounds, row)

    result, ledger = on_configured_engine(study, "fedavg", on_row=on_round)
    summary = {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "rounds": result.rounds,
        "num_clients": study.federation.num_clients,
        "clients_per_round": int(result.history["clients"].mean()),
        "model": study.reference.short_name(),
        "num_parameters": num_params,
        "bytes_up": ledger.bytes_up,
        "bytes_down": ledger.bytes_down,
        "bytes_per_round": (ledger.bytes_up + ledger.bytes_down) / result.rounds,
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    path = out / "fedavg"
    with stage(path, fingerprint=fingerprint(config, FEDAVG_SECTIONS)) as w:
        w.json("summary.json", summary)
        w.csv("history.csv", result.history)
        w.csv("ledger.csv", ledger.to_frame())
    return StageOutcome(path, summary)
