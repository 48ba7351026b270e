"""Simulated FedAvg on the distilled set: tune FL hyper-parameters without re-running FL.

The server knows every client's class counts from the distillation messages
(``DistillResult.client_class_counts``). It builds one *virtual client* per real client, holding
synthetic images of the same classes in the same proportions, and runs the real FedAvg code
(:func:`distdd_nas.fedavg.run_fedavg`) over an :class:`~distdd_nas.federation.InProcessEngine`
on these virtual clients. No byte crosses the real network: the virtual engine's ledger is its
own and is not part of any study's communication figures.

What the simulation preserves: each client's label mixture, the clients' relative sizes (FedAvg's
example weights), client sampling and the server update. What it scales: with ``total`` below the
real number of examples, every client holds proportionally fewer (repeated) synthetic images, so
a local epoch has proportionally fewer SGD steps (``steps="scaled"``); ``steps="real"`` scales the
local batch by the same factor instead (:func:`virtual_batch`), so every virtual client takes
about as many local SGD steps per round as its real client does — what client lr and local epochs
act through — at the virtual compute cost; ``total=None`` keeps the real sizes and batch, at the
real compute cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np

from distdd_nas.data import ImageDataset
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg.server import FedAvgResult, FedAvgSettings, run_fedavg
from distdd_nas.fedavg.tasks import evaluate, local_train
from distdd_nas.federation import ClientData, InProcessEngine
from distdd_nas.models import ArchSpec
from distdd_nas.seeding import numpy_rng


def _largest_remainder(quota: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total`` closest to ``quota`` (Hamilton's method, ties to lower)."""
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: max(total - int(take.sum()), 0)]] += 1
    return take


def virtual_counts(counts: np.ndarray, *, total: int | None = None) -> np.ndarray:
    """Clients × classes numbers of synthetic examples for the virtual clients.

    Client i gets ``m_i = round(N_i · total / N)`` examples (N_i its real size, N the sum), at
    least one per class it holds, split over its classes in proportion to its real counts by the
    largest-remainder method; with ``total=None`` (or ``total >= N``) the counts are the real
    ones. A class a client does not hold stays at 0.

    Raises:
        ConfigError: ``counts`` is not a non-negative clients × classes matrix, or total < 1.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or (counts < 0).any() or not np.issubdtype(counts.dtype, np.integer):
        raise ConfigError(
            "client class counts must be a clients × classes matrix of "
            "non-negative integers (DistillResult.client_class_counts)"
        )
    real = int(counts.sum())
    if total is not None and total < 1:
        raise ConfigError(f"virtual total {total} is out of range; use None or an integer >= 1")
    if total is None or total >= real:
        return counts.astype(np.int64)
    out = np.zeros_like(counts, dtype=np.int64)
    sizes = counts.sum(axis=1)
    per_client = _largest_remainder(sizes * total / max(real, 1), total)
    for i, row in enumerate(counts):
        held = row > 0
        m = max(int(per_client[i]), int(held.sum()))
        if m == 0:
            continue
        k = _largest_remainder(row * m / row.sum(), m)
        short = held & (k == 0)
        while short.any():  # every held class keeps at least one image
            c = int(np.flatnonzero(short)[0])
            donor = int(np.argmax(np.where(held, k, -1)))
            k[donor] -= 1
            k[c] = 1
            short = held & (k == 0)
        out[i] = k
    return out


#: How virtual clients take local steps: ``scaled`` (the study's batch over fewer examples: fewer
#: steps per epoch) or ``real`` (batch scaled with the examples: the real steps per epoch).
VirtualSteps = Literal["scaled", "real"]
VIRTUAL_STEPS: tuple[VirtualSteps, ...] = ("scaled", "real")


def virtual_batch(batch_size: int, *, virtual: int, real: int) -> tuple[int, int]:
    """(virtual examples, local batch) that give virtual clients their real clients' steps.

    A client of ``N_i`` real examples takes ⌈N_i / B⌉ steps per epoch; its virtual twin holds
    ``m_i ≈ N_i · V / N`` examples (V virtual, N real in all), so the batch ``b = B · V / N``
    gives ⌈m_i / b⌉ ≈ ⌈N_i / B⌉. A batch is whole: ``b`` is rounded to the nearest integer (at
    least 1) and V moved to ``b · N / B`` (rounded), so the ratio holds exactly. Unchanged when
    ``virtual >= real``.
    """
    if virtual >= real:
        return virtual, batch_size
    b = max(1, round(batch_size * virtual / real))
    return max(1, round(b * real / batch_size)), b


def local_steps(sizes: np.ndarray, *, batch_size: int, epochs: int) -> np.ndarray:
    """Local SGD steps per round of clients with ``sizes`` examples (what
    :func:`distdd_nas.training.train_model` takes: ⌈size / batch⌉ per epoch)."""
    return -(-np.asarray(sizes, dtype=np.int64) // batch_size) * epochs


def virtual_clients(
    synthetic: ImageDataset, counts: np.ndarray, *, seed: int, total: int | None = None
) -> list[ClientData]:
    """Virtual clients on the synthetic set whose class mixtures mirror the real clients'.

    Client i holds ``virtual_counts(counts, total)[i, c]`` synthetic images of class c: the
    class's images in a seeded order, repeated as often as needed (each image used
    ⌊k/ipc⌋ or ⌈k/ipc⌉ times). Clients are index views on ``synthetic``, never copies.

    Raises:
        ConfigError: A client holds a class the synthetic set has no image of.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != synthetic.num_classes:
        raise ConfigError(
            f"client class counts have shape {counts.shape}; expected clients × "
            f"{synthetic.num_classes} classes"
        )
    plan = virtual_counts(counts, total=total)
    labels = synthetic.labels.numpy()
    by_class = [np.flatnonzero(labels == c) for c in range(synthetic.num_classes)]
    clients = []
    for cid, row in enumerate(plan):
        parts = []
        for c, k in enumerate(row):
            if k == 0:
                continue
            if len(by_class[c]) == 0:
                raise ConfigError(
                    f"client {cid} holds class {c} but the synthetic set has no "
                    "image of it; distil with every class"
                )
            order = numpy_rng(seed, "virtual", cid, c).permutation(by_class[c])
            parts.append(np.resize(order, int(k)))
        idx = np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        clients.append(
            ClientData(
                cid=cid,
                dataset=synthetic,
                train_indices=idx.astype(np.int64),
                holdout_indices=np.empty(0, dtype=np.int64),
            )
        )
    return clients


def simulated_fedavg(
    *,
    arch: ArchSpec,
    synthetic: ImageDataset,
    counts: np.ndarray,
    settings: FedAvgSettings,
    test: ImageDataset,
    seed: int,
    total: int | None = None,
    steps: VirtualSteps = "scaled",
    on_round: Callable[[dict[str, float]], None] | None = None,
) -> FedAvgResult:
    """Run FedAvg with ``settings`` over virtual clients built from ``synthetic``.

    Args:
        arch: The model to train.
        synthetic: The distilled set as an :class:`ImageDataset` (real-data metadata).
        counts: The real clients' class counts (clients × classes).
        settings: The candidate's FedAvg settings (client lr, local epochs, batch, server lr…).
        test: Where the server evaluates the global model each ``eval_every`` rounds.
        seed: Seeds the virtual clients, client sampling, initial model and local shuffles.
        total: Virtual examples over all clients (``None``: the real sizes).
        steps: ``scaled`` keeps the study's batch (fewer local steps); ``real`` scales the batch
            so each virtual client takes its real client's steps per epoch.
        on_round: Receives each FedAvg history row (pruning, progress).

    Returns:
        The :class:`FedAvgResult` of the simulation (its bytes are virtual, not real traffic).
    """
    if steps not in VIRTUAL_STEPS:
        raise ConfigError(
            f"unknown virtual steps {steps!r}; use one of {', '.join(VIRTUAL_STEPS)}"
        )
    if steps == "real" and total is not None:
        total, batch = virtual_batch(
            settings.local.batch_size, virtual=total, real=int(np.asarray(counts).sum())
        )
        settings = replace(settings, local=replace(settings.local, batch_size=batch))
    clients = virtual_clients(synthetic, counts, seed=seed, total=total)
    engine = InProcessEngine(
        clients=clients, tasks={"local_train": local_train, "evaluate": evaluate}
    )
    return run_fedavg(
        engine, arch=arch, test=test, settings=settings, seed=seed, on_round=on_round
    )


__all__ = [
    "VIRTUAL_STEPS",
    "VirtualSteps",
    "local_steps",
    "simulated_fedavg",
    "virtual_batch",
    "virtual_clients",
    "virtual_counts",
]
