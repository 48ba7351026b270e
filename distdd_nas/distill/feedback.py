"""The client side of the upload codecs: encoding a reply's rows, with error feedback.

Top-k sends a few entries of each tensor; error feedback (Seide et al. 2014; Stich et al.
2018) keeps what was not sent — ``residual = (gradient + residual) − sent`` — on the client,
per class, and adds it to that class's next gradient, so over steps everything computed is
eventually sent (for a constant gradient g, the rows sent over T steps sum to T·g minus the
last residual). The codec decodes what it encoded to form the residual, so integer rounding
of the kept values is fed back too.

What a residual means when the network changes: within an outer iteration the broadcast
network moves by one small step between matching steps (``global_grad``) or by a few epochs
on the synthetic set (``synthetic``), and carrying the residual is standard error feedback
under a moving model. A new outer iteration starts from a freshly initialised network whose
coordinates have nothing to do with the previous one's, so the residual is dropped there: the
memory is keyed by the iteration's network seed (``feedback_key`` in the message). It is also
dropped when a step number does not follow the last one (a new run in the same process), and
a re-sent step (a quorum retry) starts again from the residual before that step.

The memory lives in the client's process, keyed by its :class:`ClientData` (weakly: it goes
with the client). A Flower ClientApp whose process does not outlive a round loses it, and
top-k then runs without feedback (decoding is unaffected).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from distdd_nas.distill.codec import RowCodec
from distdd_nas.federation.engine import ClientData
from distdd_nas.federation.message import Message
from distdd_nas.seeding import numpy_rng


@dataclass
class Feedback:
    """One client's error-feedback memory: per class, the residual after step ``step`` and the
    one before it (for a retried step), within the iteration named ``key``."""

    key: int = -1
    step: int = -1
    after: dict[int, np.ndarray] = field(default_factory=dict)
    before: dict[int, np.ndarray] = field(default_factory=dict)

    def residuals(self, *, key: int, step: int) -> dict[int, np.ndarray]:
        """The residuals to add at ``step`` of iteration ``key`` (empty for a fresh start)."""
        if key != self.key or step < self.step:
            self.key, self.step, self.after, self.before = key, step, {}, {}
        if step > self.step:
            self.step, self.before = step, self.after
        return self.before

    def keep(self, classes: Sequence[int], residual: np.ndarray) -> None:
        """Store this step's residual rows (one per class in ``classes``)."""
        self.after = {**self.before, **{int(c): r for c, r in zip(classes, residual)}}


_MEMORY: weakref.WeakKeyDictionary[ClientData, Feedback] = weakref.WeakKeyDictionary()


def memory_of(client: ClientData) -> Feedback:
    """The error-feedback memory of ``client`` in this process."""
    return _MEMORY.setdefault(client, Feedback())


def encode_rows(
    client: ClientData, msg: Message, rows: np.ndarray, classes: Sequence[int], codec: RowCodec
) -> dict[str, np.ndarray]:
    """The reply arrays of ``rows`` (float32, one per class in ``classes``, ascending) under
    ``codec``: integer rounding draws from a stream of the step seed, the client and the class
    (same seed, same bytes); top-k first adds the class's residual (see the module doc)."""
    seed = int(msg.config["seed"])
    rngs = [numpy_rng(seed, "codec", client.cid, int(c)) for c in classes]
    if not codec.sparse:
        return codec.encode(rows, rngs=rngs)
    memory = memory_of(client)
    residual = memory.residuals(
        key=int(msg.config.get("feedback_key", 0)), step=int(msg.config.get("step", 0))
    )
    total = np.array(rows, dtype=np.float32)
    for i, c in enumerate(classes):
        if int(c) in residual:
            total[i] += residual[int(c)]
    arrays = codec.encode(total, rngs=rngs)
    memory.keep(classes, total - codec.decode(arrays, len(total)))
    return arrays


__all__ = ["Feedback", "encode_rows", "memory_of"]
