"""A round that proceeds with the replies it gets, or is retried, or skipped.

Clients drop out (:class:`~distdd_nas.federation.engine.ClientDropped`, or a Flower node that
errs or times out). A server algorithm asks :func:`deliver` for a round: it sends the messages,
keeps the replies that arrive, and while fewer than ``min_replies`` have arrived it sends the
round again to the clients that have not replied (``retries`` times at most, each attempt a
fresh delivery with ``attempt`` in its configuration, metered in the ledger like the first). A
round still short after the last attempt is *skipped*: the caller leaves its model or synthetic
set unchanged and records the skip in its history.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from distdd_nas.errors import ConfigError
from distdd_nas.federation.engine import Engine
from distdd_nas.federation.message import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quorum:
    """How many replies a round needs, and how often a short round is sent again."""

    min_replies: int = 1
    retries: int = 2

    def __post_init__(self) -> None:
        if self.min_replies < 1:
            raise ConfigError(f"min_replies={self.min_replies} is out of range; use >= 1")
        if self.retries < 0:
            raise ConfigError(f"round_retries={self.retries} is out of range; use >= 0")


DEFAULT_QUORUM = Quorum()


@dataclass(frozen=True)
class Delivery:
    """What a round got: the replies of its last attempt, how many attempts it took, and
    whether it fell short of the quorum after all of them (then the caller skips it)."""

    replies: dict[int, Message]
    attempts: int
    skipped: bool


def deliver(
    engine: Engine,
    task: str,
    messages: Mapping[int, Message],
    *,
    round: int,
    quorum: Quorum = DEFAULT_QUORUM,
) -> Delivery:
    """Run ``task`` for one round until ``quorum.min_replies`` replies have arrived.

    The quorum is capped at the number of messages (a round addressed to fewer clients cannot
    ask for more replies). An empty round is delivered once and not counted as skipped.
    """
    need = min(quorum.min_replies, len(messages))
    replies: dict[int, Message] = {}
    for attempt in range(quorum.retries + 1):
        missing = {cid: m for cid, m in messages.items() if cid not in replies}
        sent = missing if attempt == 0 else _retry(missing, attempt)
        replies.update(engine.run_round(task, sent, round=round))
        if len(replies) >= need:
            return Delivery(dict(sorted(replies.items())), attempt + 1, skipped=False)
        log.warning(
            "%s round %d attempt %d: %d of %d replies, %d needed",
            task,
            round,
            attempt + 1,
            len(replies),
            len(messages),
            need,
        )
    log.warning("%s round %d skipped: too few replies after %d attempts", task, round, attempt + 1)
    return Delivery(dict(sorted(replies.items())), quorum.retries + 1, skipped=True)


def _retry(messages: Mapping[int, Message], attempt: int) -> dict[int, Message]:
    """The same messages marked with the attempt (clients seed their faults from it)."""
    return {
        cid: Message(arrays=m.arrays, config={**m.config, "attempt": attempt})
        for cid, m in messages.items()
    }


__all__ = ["DEFAULT_QUORUM", "Delivery", "Quorum", "deliver"]
