"""Faulty clients, injected on the client side so every engine sees the same faults.

Two kinds of fault wrap a client task (:data:`~distdd_nas.federation.engine.ClientTask`):

* **Failures**: a client drops out of a delivery with probability ``failure_rate`` by raising
  :class:`ClientDropped`. The in-process engine skips that reply; in Flower the ClientApp's
  exception comes back as an error reply, which the Flower engine skips the same way.
* **Byzantine clients**: a fixed, seeded set of ``byzantine_fraction`` × N clients compute the
  honest reply and then corrupt it. With ``x`` the honest array and ``r`` the reference the
  server sent under the same key (the global model for FedAvg; zero for class gradients, which
  are already updates), the client sends ``r + attack(x − r)``:

  ============= =========================================================================
  ``non_finite`` every value NaN (a crashed or hostile client)
  ``scale``      ``byzantine_scale × (x − r)`` (a boosted update)
  ``sign_flip``  ``−(x − r)`` (gradient ascent)
  ``noise``      Gaussian noise with the norm of ``x − r`` (an update carrying no signal)
  ============= =========================================================================

  Only floating-point arrays are corrupted; counts and integer buffers stay honest, so the
  attack is on the values, not on the bookkeeping (inflated counts are bounded separately,
  see :mod:`~distdd_nas.federation.aggregators.guard`).

Every decision comes from :func:`~distdd_nas.seeding.derive_seed` of the fault seed, the task,
the client and the message's configuration, never from a clock or a process-global stream, so
the in-process and Flower engines drop and corrupt the same deliveries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.federation.engine import ClientData, ClientDropped, ClientTask
from distdd_nas.federation.message import Message
from distdd_nas.seeding import derive_seed, numpy_rng

log = logging.getLogger(__name__)

BYZANTINE_KINDS = ("non_finite", "scale", "sign_flip", "noise")
#: Tasks whose replies Byzantine clients corrupt (the census and evaluation stay honest).
ATTACKED_TASKS = ("class_gradients", "local_train")


@dataclass(frozen=True)
class Faults:
    """Which deliveries fail and which clients lie.

    Attributes:
        failure_rate: Probability that a client drops one delivery, in [0, 1).
        byzantine_fraction: Share of clients that corrupt their replies, in [0, 0.5).
        byzantine_kind: One of :data:`BYZANTINE_KINDS`.
        byzantine_scale: The factor of the ``scale`` attack.
        seed: Root of every fault decision (the study seed).
    """

    failure_rate: float = 0.0
    byzantine_fraction: float = 0.0
    byzantine_kind: str = "sign_flip"
    byzantine_scale: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate < 1.0:
            raise ConfigError(
                f"failure_rate {self.failure_rate} is out of range; use 0 <= rate < 1"
            )
        if not 0.0 <= self.byzantine_fraction < 0.5:
            raise ConfigError(
                f"byzantine_fraction {self.byzantine_fraction} is out of range; use 0 <= f < 0.5 "
                "(no aggregator can outvote a Byzantine majority)"
            )
        if self.byzantine_kind not in BYZANTINE_KINDS:
            raise ConfigError(
                f"unknown byzantine_kind {self.byzantine_kind!r}; "
                f"choose one of {', '.join(BYZANTINE_KINDS)}"
            )
        if not np.isfinite(self.byzantine_scale):
            raise ConfigError(f"byzantine_scale {self.byzantine_scale} must be finite")

    @property
    def active(self) -> bool:
        return self.failure_rate > 0.0 or self.byzantine_fraction > 0.0

    def byzantine_clients(self, num_clients: int) -> frozenset[int]:
        """The ``round(fraction × num_clients)`` lying clients: a seeded draw, fixed per run."""
        k = int(np.floor(self.byzantine_fraction * num_clients + 0.5))
        order = numpy_rng(self.seed, "byzantine", "clients").permutation(num_clients)
        return frozenset(int(c) for c in order[:k])

    def wrap(self, tasks: Mapping[str, ClientTask], *, num_clients: int) -> dict[str, ClientTask]:
        """``tasks`` with the faults injected (a plain copy when there are none)."""
        if not self.active:
            return dict(tasks)
        liars = self.byzantine_clients(num_clients)
        return {name: self._faulty(name, fn, liars) for name, fn in tasks.items()}

    def _faulty(self, task: str, fn: ClientTask, liars: frozenset[int]) -> ClientTask:
        def faulty(client: ClientData, msg: Message) -> Message:
            key = _delivery_key(msg)
            if self.failure_rate > 0.0:
                draw = numpy_rng(self.seed, "failure", task, client.cid, key).random()
                if draw < self.failure_rate:
                    raise ClientDropped(f"client {client.cid} dropped out of {task}")
            reply = fn(client, msg)
            if client.cid not in liars or task not in ATTACKED_TASKS:
                return reply
            rng = numpy_rng(self.seed, "byzantine", task, client.cid, key)
            arrays = {
                name: attack(
                    value,
                    reference=msg.arrays.get(name),
                    kind=self.byzantine_kind,
                    scale=self.byzantine_scale,
                    rng=rng,
                )
                for name, value in reply.arrays.items()
            }
            return Message(arrays=arrays, config=reply.config)

        return faulty


def attack(
    value: np.ndarray,
    *,
    reference: np.ndarray | None,
    kind: str,
    scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``reference + attack(value − reference)`` in ``value``'s dtype (see the module doc);
    non-float arrays, and references of another shape, pass through / count as zero."""
    if value.dtype.kind != "f":
        return value
    x = np.asarray(value, dtype=np.float64)
    r = (
        np.asarray(reference, dtype=np.float64)
        if reference is not None and np.shape(reference) == x.shape
        else np.zeros_like(x)
    )
    delta = x - r
    if kind == "non_finite":
        bad = np.full_like(x, np.nan)
    elif kind == "scale":
        bad = r + scale * delta
    elif kind == "sign_flip":
        bad = r - delta
    elif kind == "noise":
        noise = rng.standard_normal(x.shape)
        norm = float(np.linalg.norm(noise))
        bad = r + noise * (float(np.linalg.norm(delta)) / norm if norm > 0 else 0.0)
    else:
        raise ConfigError(f"unknown byzantine_kind {kind!r}; choose one of {BYZANTINE_KINDS}")
    with np.errstate(over="ignore", invalid="ignore"):
        return bad.astype(value.dtype)


def _delivery_key(msg: Message) -> int:
    """One number per distinct delivery: a digest of the message's configuration (it carries
    the round's seed and, for a retried round, the attempt)."""
    text = json.dumps({k: msg.config[k] for k in sorted(msg.config)}, default=str)
    return derive_seed(0, text)


__all__ = ["ATTACKED_TASKS", "BYZANTINE_KINDS", "ClientDropped", "Faults", "attack"]
