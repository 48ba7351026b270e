"""Client-side FL tasks: ``local_train`` and ``evaluate``.

Each task is a pure function of the client's data and one :class:`Message`; the server decides
everything else (architecture, hyper-parameters, seeds) and sends it in ``Message.config``. The
model architecture travels as the JSON of an :class:`~distdd_nas.models.ArchSpec`, so a client can
rebuild any candidate of a search from a few bytes (Optuna's FixedTrial idea, applied to FL).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from distdd_nas.federation.engine import ClientData
from distdd_nas.federation.message import Message, as_numpy
from distdd_nas.federation.model_wire import model_from_message
from distdd_nas.models import ArchSpec, get_parameters
from distdd_nas.seeding import torch_generator
from distdd_nas.training import TrainSettings, evaluate_model, train_model


def train_config(
    settings: TrainSettings, *, arch: ArchSpec, seed: int, prox_mu: float
) -> dict[str, Any]:
    """The ``Message.config`` of a ``local_train`` request (inverse of :func:`_settings`)."""
    return {
        "arch": json.dumps(arch.to_dict(), sort_keys=True),
        "seed": seed,
        "epochs": settings.epochs,
        "lr": settings.lr,
        "momentum": settings.momentum,
        "weight_decay": settings.weight_decay,
        "batch_size": settings.batch_size,
        "max_steps": settings.max_steps if settings.max_steps is not None else 0,
        "prox_mu": prox_mu,
    }


def _settings(cfg: Any) -> TrainSettings:
    max_steps = int(cfg["max_steps"])
    return TrainSettings(
        epochs=int(cfg["epochs"]),
        lr=float(cfg["lr"]),
        momentum=float(cfg["momentum"]),
        weight_decay=float(cfg["weight_decay"]),
        batch_size=int(cfg["batch_size"]),
        max_steps=max_steps if max_steps > 0 else None,
    )


def local_train(client: ClientData, msg: Message, *, stop_if_diverged: bool = True) -> Message:
    """Train the received model on the client's training split; reply weights and example count.

    A client whose weights turn non-finite stops there (``train_model``'s ``stop_if_diverged``):
    the server drops a non-finite update whenever it was computed, so the round's outcome is the
    same and a diverging candidate costs a few steps per client instead of an epoch. Two things
    do change: under a Flower round timeout a diverging client that used to time out now replies
    (and is rejected), and a server that kept non-finite updates (a custom aggregation) would see
    the weights at the stop instead of the epoch's end; a task map holding
    ``functools.partial(local_train, stop_if_diverged=False)`` keeps the full epochs."""
    model = model_from_message(client, msg)
    images = client.dataset.images[client.train_indices]
    labels = client.dataset.labels[client.train_indices]
    prox_mu = float(msg.config.get("prox_mu", 0.0))
    center = {k: v.detach().clone() for k, v in model.named_parameters()} if prox_mu > 0 else None
    loss = train_model(
        model,
        images,
        labels,
        settings=_settings(msg.config),
        generator=torch_generator(int(msg.config["seed"]), "local_train", client.cid),
        prox_center=center,
        prox_mu=prox_mu,
        stop_if_diverged=stop_if_diverged,
    )
    return Message(
        arrays=as_numpy(get_parameters(model)),
        config={"num_examples": client.num_train, "train_loss": loss},
    )


def evaluate(client: ClientData, msg: Message) -> Message:
    """Evaluate the received model on the client's held-out split (``split="train"`` for train)."""
    model = model_from_message(client, msg)
    indices = (
        client.train_indices if msg.config.get("split") == "train" else client.holdout_indices
    )
    idx = torch.as_tensor(indices, dtype=torch.long)
    loss, acc, n = evaluate_model(model, client.dataset.images[idx], client.dataset.labels[idx])
    correct = 0 if n == 0 else round(acc * n)
    return Message(config={"num_examples": n, "loss": loss if n else 0.0, "correct": correct})
