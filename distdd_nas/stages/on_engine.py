"""Run a server algorithm (DistDD or FedAvg) on the study's configured engine.

In-process, the algorithm gets an :class:`~distdd_nas.federation.InProcessEngine` over the
study's clients. With ``federation.engine = "flower"`` the same server function runs inside a
Flower ServerApp (simulation or deployment runtime): :func:`flower_distill` and
:func:`flower_fedavg` are what the ServerApp calls, by name, and they return plain arrays and
JSON that the runtime hands back. Both paths give the same result objects and a ledger.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from distdd_nas.artifacts import write_atomic
from distdd_nas.distill import DistilledSet, DistillResult, run_distill
from distdd_nas.distill.checkpoint import Checkpointer, DistillState
from distdd_nas.fedavg import FedAvgResult, run_fedavg
from distdd_nas.federation import Engine, Ledger
from distdd_nas.study import Study

if TYPE_CHECKING:
    from distdd_nas.federation.flower.apps import ServerRun

OnRow = Callable[[dict[str, float]], None]
SERVER_FNS = {
    "distill": "distdd_nas.stages.on_engine:flower_distill",
    "fedavg": "distdd_nas.stages.on_engine:flower_fedavg",
}


#: Run-config key naming the checkpoint file of a distillation run inside Flower.
RC_CHECKPOINT = "distill-checkpoint"


class FileCheckpointer:
    """A :class:`~distdd_nas.distill.Checkpointer` in one file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DistillState | None:
        if not self.path.exists():
            return None
        data = torch.load(self.path, weights_only=True)
        return DistillState.from_payload(data)

    def save(self, state: DistillState) -> None:
        buffer = io.BytesIO()
        torch.save(state.to_payload(), buffer)
        write_atomic(self.path, buffer.getvalue())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def distill_on(
    study: Study,
    engine: Engine,
    *,
    on_row: OnRow | None = None,
    checkpoint: Checkpointer | None = None,
    seed: int | None = None,
) -> DistillResult:
    """The study's DistDD run on any engine (image shape and class count are metadata the
    server knows, not data), resuming from ``checkpoint`` where it holds a state. ``seed``:
    the distillation's root seed (None: ``study.seed``); only the distillation changes with
    it, not the data, partition or evaluation (benches repeat a distillation this way)."""
    like = study.federation.train
    return run_distill(
        engine,
        arch=study.reference,
        input_shape=like.input_shape,
        num_classes=like.num_classes,
        settings=study.config.distill,
        fraction=study.distill_fraction,
        seed=study.config.study.seed if seed is None else seed,
        test=study.federation.test if study.config.distill.eval_every else None,
        on_iteration=on_row,
        quorum=study.quorum,
        checkpoint=checkpoint,
    )


def fedavg_on(study: Study, engine: Engine, *, on_row: OnRow | None = None) -> FedAvgResult:
    """The study's FedAvg of its reference model on any engine."""
    return run_fedavg(
        engine,
        arch=study.reference,
        test=study.federation.test,
        settings=study.fedavg_settings,
        seed=study.config.study.seed,
        on_round=on_row,
        quorum=study.quorum,
    )


def flower_distill(run: ServerRun) -> dict[str, Any]:
    """ServerApp entry point: DistDD inside Flower; arrays come back through result.npz."""
    assert run.study is not None, "flower_distill needs the study config in the run config"
    path = str(run.run_config.get(RC_CHECKPOINT, "") or "")
    checkpoint = FileCheckpointer(Path(path)) if path else None
    result = distill_on(Study(run.study), run.engine, checkpoint=checkpoint)
    return {
        **result.synthetic.to_arrays(),
        "client_class_counts": result.client_class_counts,
        "history": result.history.to_dict(orient="list"),
        "wall_s": result.wall_s,
        "privacy": result.privacy,
    }


def flower_fedavg(run: ServerRun) -> dict[str, Any]:
    """ServerApp entry point: FedAvg of the reference model inside Flower."""
    assert run.study is not None, "flower_fedavg needs the study config in the run config"
    result = fedavg_on(Study(run.study), run.engine)
    return {
        **{f"param/{k}": v for k, v in result.parameters.items()},
        "history": result.history.to_dict(orient="list"),
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "rounds": result.rounds,
        "wall_s": result.wall_s,
    }


def on_configured_engine(
    study: Study,
    algorithm: Literal["distill", "fedavg"],
    *,
    on_row: OnRow | None = None,
    checkpoint: Path | None = None,
) -> tuple[Any, Ledger]:
    """Run ``distill`` or ``fedavg`` on the configured engine; return (result, ledger).

    ``checkpoint``: a file where a distillation keeps its state after every iteration and
    resumes from (in this process, or in the Flower ServerApp through the run config).
    """
    if study.config.federation.engine == "inprocess":
        engine = study.make_engine()
        try:
            if algorithm == "distill":
                saver = FileCheckpointer(checkpoint) if checkpoint is not None else None
                return distill_on(study, engine, on_row=on_row, checkpoint=saver), engine.ledger
            return fedavg_on(study, engine, on_row=on_row), engine.ledger
        finally:
            engine.close()
    from distdd_nas.federation.flower.runtime import run_on_flower

    extra = {RC_CHECKPOINT: str(checkpoint)} if checkpoint is not None else {}
    with tempfile.TemporaryDirectory(prefix=f"distdd-flower-{algorithm}-") as tmp:
        out = run_on_flower(
            study.config, server_fn=SERVER_FNS[algorithm], out_dir=Path(tmp), extra=extra
        )
    if algorithm == "distill":
        synthetic = DistilledSet.from_arrays(out.arrays)
        return DistillResult(
            synthetic,
            pd.DataFrame(out.result["history"]),
            np.asarray(out.arrays["client_class_counts"]),
            float(out.result["wall_s"]),
            privacy=dict(out.result.get("privacy", {})),
        ), out.ledger
    return FedAvgResult(
        parameters={k.removeprefix("param/"): v for k, v in out.arrays.items()},
        history=pd.DataFrame(out.result["history"]),
        test_accuracy=float(out.result["test_accuracy"]),
        test_loss=float(out.result["test_loss"]),
        rounds=int(out.result["rounds"]),
        wall_s=float(out.result["wall_s"]),
    ), out.ledger
