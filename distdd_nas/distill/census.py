"""Round 0 of a distillation: every client reports its per-class counts (and, for the
``client_mean`` initialisation, per-class pixel moments), metered like every payload. Under
differential privacy each client adds Gaussian noise to its counts before sending them
(:mod:`distdd_nas.distill.privacy`), and the server keeps only the rounded, non-negative noised
counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distdd_nas.errors import EngineError
from distdd_nas.federation import Engine, Message
from distdd_nas.federation.message import Scalar


@dataclass(frozen=True)
class ClassCensus:
    """What round 0 taught the server: class counts per client (and moments, if asked)."""

    counts: np.ndarray  # clients × classes, int64
    moments: list[dict[str, np.ndarray]]


def census(
    engine: Engine,
    *,
    num_classes: int,
    moments: bool,
    min_count: int = 1,
    dp_noise: float = 0.0,
    seed: int = 0,
) -> ClassCensus:
    """Round 0: every client reports its per-class counts (metered like every payload), and
    with ``moments`` its per-class pixel sums for classes it holds ``min_count`` images of.
    With ``dp_noise`` > 0 each client adds N(0, dp_noise²) to every count (from a stream of
    ``seed`` and its id); the server rounds what arrives and clips it at 0."""
    config: dict[str, Scalar] = {"moments": moments}
    if moments:
        config["min_count"] = min_count
    if dp_noise > 0:
        config.update(dp_noise=dp_noise, seed=seed)
    messages = {c: Message(config=dict(config)) for c in range(engine.num_clients)}
    replies = engine.run_round("class_stats", messages, round=0)
    counts = np.zeros((engine.num_clients, num_classes), dtype=np.int64)
    for cid, reply in replies.items():
        reported = np.asarray(reply.arrays["counts"], dtype=np.float64)
        if reported.shape != (num_classes,):
            raise EngineError(
                f"client {cid} reported counts of shape {reported.shape} for "
                f"{num_classes} classes; the clients hold another dataset"
            )
        counts[cid] = np.clip(np.rint(reported), 0, None).astype(np.int64)
    if counts.sum() == 0:
        raise EngineError("no client reported any data in the class census; check the partition")
    return ClassCensus(counts, [dict(r.arrays) for r in replies.values()])


__all__ = ["ClassCensus", "census"]
