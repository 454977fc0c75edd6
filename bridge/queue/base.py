"""What the receiver, scheduler and worker need of a queue; RabbitMQ and in-process alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

Handler = Callable[[int, int], Awaitable[None]]  # (delivery id, chat id)


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

    @property
    def connected(self) -> bool: ...

    async def close(self) -> None: ...
