"""What the receiver, scheduler and worker need of a queue; RabbitMQ and in-process alike."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

Handler = Callable[[int, int], Awaitable[None]]  # (delivery id, chat id)


class DeadLetterReason(enum.StrEnum):
    """Why a message left its queue for the dead-letter queue (RabbitMQ's x-death reasons)."""

    DELIVERY_LIMIT = "delivery_limit"  # handed out delivery_limit times, never acked
    REJECTED = "rejected"  # rejected without requeue: malformed
    EXPIRED = "expired"
    MAXLEN = "maxlen"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A wake-up found dead-lettered; None where the message did not say."""

    reason: DeadLetterReason
    delivery_id: int | None
    chat_id: int | None
    deliveries: int | None  # times it was handed out before it died
    body: bytes  # the first bytes, for a message that is not a delivery id


class Queue(Protocol):
    """A queue of delivery ids: a hint that a row may need work, never the truth.

    Losing a message is harmless (the scheduler republishes rows nobody
    claimed) and so is a duplicate (the claim is conditional).
    """

    async def publish(self, deliveries: Sequence[tuple[int, int]]) -> None:
        """Publish (delivery id, chat id) pairs; return once they are safely queued."""

    async def consume(self, handler: Handler, first: Iterable[int] = ()) -> None:
        """Hand each delivery to ``handler``; a handler that raises gets it again."""

    async def step_back(self, shards: Iterable[int]) -> None:
        """Let another worker own these shards."""

    async def stop_consuming(self) -> None:
        """Take no new deliveries; return when the ones in hand are done."""

    async def take_dead_letters(self, limit: int) -> list[DeadLetter]:
        """Take up to ``limit`` messages off the dead-letter queue (they are gone after)."""

    @property
    def connected(self) -> bool: ...

    async def close(self) -> None: ...
