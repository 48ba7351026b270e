"""FedAvg (and FedProx) written once against the :class:`~distdd_nas.federation.Engine` protocol.

A round is Flower's configure → fit → aggregate: select clients and build one ``local_train``
message each (configure), let the engine deliver them (fit), drop non-finite replies, aggregate
the weights with the chosen aggregator weighted by example counts, and move the global model by
``server_lr`` towards the aggregate (aggregate). The server then evaluates on its test set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from distdd_nas.data import ImageDataset
from distdd_nas.errors import EngineError
from distdd_nas.fedavg.tasks import train_config
from distdd_nas.federation import (
    AggregatorSpec,
    Combine,
    Engine,
    Message,
    drop_non_finite,
    make_aggregator,
    select_clients,
)
from distdd_nas.federation.quorum import DEFAULT_QUORUM, Quorum, deliver
from distdd_nas.models import ArchSpec, build_model, get_parameters, set_parameters
from distdd_nas.seeding import derive_seed
from distdd_nas.training import TrainSettings, evaluate_model

log = logging.getLogger(__name__)

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class FedAvgSettings:
    """Everything the FedAvg server decides (a subset of :class:`config.FedAvgSection`)."""

    rounds: int = 20
    local: TrainSettings = field(default_factory=TrainSettings)
    server_lr: float = 1.0
    prox_mu: float = 0.0
    fraction: float = 1.0
    aggregator: AggregatorSpec = "mean"
    eval_every: int = 1


@dataclass(frozen=True, eq=False)
class FedAvgResult:
    """Final global model and the per-round history (one row per round)."""

    parameters: Params
    history: pd.DataFrame
    test_accuracy: float
    test_loss: float
    rounds: int
    wall_s: float

    def __repr__(self) -> str:
        return (
            f"FedAvgResult(rounds={self.rounds}, test_accuracy={self.test_accuracy:.4f}, "
            f"wall_s={self.wall_s:.1f})"
        )


def server_update(global_params: Params, aggregate: Params, *, server_lr: float) -> Params:
    """w ← w + η_s (w_agg − w); η_s = 1 is plain FedAvg. Integer buffers take the aggregate."""
    out: Params = {}
    for key, old in global_params.items():
        new = aggregate[key]
        if old.dtype.kind != "f":
            out[key] = np.asarray(np.rint(new), dtype=old.dtype)
        else:
            out[key] = (old + server_lr * (new.astype(old.dtype) - old)).astype(old.dtype)
    return out


def fedavg_round(
    engine: Engine,
    params: Params,
    *,
    rnd: int,
    arch: ArchSpec,
    settings: FedAvgSettings,
    seed: int,
    aggregate: Combine,
    quorum: Quorum = DEFAULT_QUORUM,
) -> tuple[Params, dict[str, float]]:
    """One round: configure (select clients, one ``local_train`` message each), fit (the engine
    delivers, retrying a round short of ``quorum``), aggregate (drop non-finite replies,
    combine weighted by example counts, move the global model by ``server_lr``). A round still
    short of the quorum leaves the model unchanged. Returns the new parameters and the round's
    counts."""
    selected = select_clients(
        num_clients=engine.num_clients, fraction=settings.fraction, seed=seed, round=rnd
    )
    config = train_config(
        settings.local,
        arch=arch,
        seed=derive_seed(seed, "fedavg", "round", rnd),
        prox_mu=settings.prox_mu,
    )
    delivery = deliver(
        engine,
        "local_train",
        {cid: Message(arrays=params, config=config) for cid in selected},
        round=rnd,
        quorum=quorum,
    )
    replies = {} if delivery.skipped else delivery.replies
    finite, rejected = drop_non_finite(
        {cid: r.arrays for cid, r in replies.items()}, what="model update"
    )
    if finite:
        weights = [float(replies[cid].config["num_examples"]) for cid in finite]
        params = server_update(
            params, aggregate(list(finite.values()), weights), server_lr=settings.server_lr
        )
    else:
        log.warning("round %d: no usable client update; global model unchanged", rnd)
    train_losses = [float(replies[c].config["train_loss"]) for c in finite]
    return params, {
        "clients": float(len(selected)),
        "replies": float(len(delivery.replies)),
        "attempts": float(delivery.attempts),
        "skipped": float(delivery.skipped),
        "rejected": float(len(rejected)),
        "train_loss": float(np.mean(train_losses)) if train_losses else float("nan"),
    }


def run_fedavg(
    engine: Engine,
    *,
    arch: ArchSpec,
    test: ImageDataset,
    settings: FedAvgSettings,
    seed: int,
    initial: Params | None = None,
    on_round: Callable[[dict[str, float]], None] | None = None,
    quorum: Quorum = DEFAULT_QUORUM,
) -> FedAvgResult:
    """Train ``arch`` with FedAvg over ``engine``; evaluate on the server's ``test`` set.

    The initial model is seeded from ``seed`` unless ``initial`` is given. ``on_round`` receives
    each history row (used for progress bars and pruning). ``quorum`` says how many replies a
    round needs before it is retried or skipped (history columns ``attempts``, ``skipped``).
    """
    start = time.perf_counter()
    model = build_model(
        arch,
        input_shape=test.input_shape,
        num_classes=test.num_classes,
        seed=derive_seed(seed, "fedavg", "init"),
    )
    params: Params = dict(initial) if initial is not None else get_parameters(model)
    aggregate = make_aggregator(settings.aggregator)
    rows: list[dict[str, float]] = []
    loss, acc = float("nan"), float("nan")
    for rnd in range(1, settings.rounds + 1):
        params, outcome = fedavg_round(
            engine,
            params,
            rnd=rnd,
            arch=arch,
            settings=settings,
            seed=seed,
            aggregate=aggregate,
            quorum=quorum,
        )
        if rnd % settings.eval_every == 0 or rnd == settings.rounds:
            set_parameters(model, params)
            loss, acc, _ = evaluate_model(model, test.images, test.labels)
        row = {
            "round": float(rnd),
            **outcome,
            "test_loss": loss,
            "test_accuracy": acc,
            "bytes_up": float(engine.ledger.bytes_up),
            "bytes_down": float(engine.ledger.bytes_down),
            "wall_s": time.perf_counter() - start,
        }
        rows.append(row)
        if on_round is not None:
            on_round(row)
    if not rows:
        raise EngineError("FedAvg ran no round; set fedavg.rounds >= 1")
    history = pd.DataFrame(rows).astype(
        {"round": int, "clients": int, "replies": int, "rejected": int}
    )
    return FedAvgResult(
        parameters=params,
        history=history,
        test_accuracy=acc,
        test_loss=loss,
        rounds=settings.rounds,
        wall_s=time.perf_counter() - start,
    )


def evaluate_parameters(arch: ArchSpec, params: Params, test: ImageDataset) -> tuple[float, float]:
    """(loss, accuracy) of given global parameters on a server-side test set."""
    model = build_model(arch, input_shape=test.input_shape, num_classes=test.num_classes)
    set_parameters(model, params)
    with torch.no_grad():
        loss, acc, _ = evaluate_model(model, test.images, test.labels)
    return loss, acc
