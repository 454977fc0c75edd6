"""The queue of a standalone process: in memory, and that is safe.

Standalone mode keeps the delivery table in SQLite, and the table is the
queue: a message here is only a wake-up for a row that is already on disk.
A crash loses the wake-ups, never the work: at start the scheduler
publishes every unfinished row again (see ``Scheduler.tick(catch_up=True)``).

It hands deliveries to the handler the way a RabbitMQ channel with
``prefetch`` does: in publish order, at most ``prefetch`` at a time, a
failed one again after the others (up to ``delivery_limit`` times, then it
is dead-lettered: kept for the scheduler to count and log, while its row
waits for the scheduler's republish like a RabbitMQ dead letter's would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence

from bridge.queue.base import DeadLetter, DeadLetterReason, Handler

log = logging.getLogger(__name__)


class LocalQueue:
    def __init__(self, *, prefetch: int = 32, delivery_limit: int = 20) -> None:
        self._pending: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
        self._prefetch = prefetch
        self._delivery_limit = delivery_limit
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        # Bounded like any dead-letter queue left unread: the oldest go first.
        self._dead: deque[DeadLetter] = deque(maxlen=10_000)

    async def publish(self, deliveries: Sequence[tuple[int, int]]) -> None:
        for delivery_id, chat_id in deliveries:
            self._pending.put_nowait((delivery_id, chat_id, 0))

    async def consume(self, handler: Handler, first: Iterable[int] = ()) -> None:
        # One process owns every shard: ``first`` has nothing to choose between.
        self._dispatcher = asyncio.create_task(self._dispatch(handler), name="local-queue")

    async def _dispatch(self, handler: Handler) -> None:
        slots = asyncio.Semaphore(self._prefetch)
        while True:
            delivery_id, chat_id, failures = await self._pending.get()
            await slots.acquire()
            task = asyncio.create_task(self._handle(handler, delivery_id, chat_id, failures))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _handle(
        self, handler: Handler, delivery_id: int, chat_id: int, failures: int
    ) -> None:
        try:
            await handler(delivery_id, chat_id)
        except Exception:
            failures += 1
            if failures < self._delivery_limit:
                log.exception("delivery %d: handler failed; queued again", delivery_id)
                self._pending.put_nowait((delivery_id, chat_id, failures))
            else:
                log.exception(
                    "delivery %d: handler failed %d times; dead-lettered, the scheduler "
                    "will offer it again",
                    delivery_id,
                    failures,
                )
                self._dead.append(
                    DeadLetter(
                        reason=DeadLetterReason.DELIVERY_LIMIT,
                        delivery_id=delivery_id,
                        chat_id=chat_id,
                        deliveries=failures,
                        body=str(delivery_id).encode(),
                    )
                )

    async def step_back(self, shards: Iterable[int]) -> None:
        """Nothing to hand over: there is no other worker."""

    async def stop_consuming(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def take_dead_letters(self, limit: int) -> list[DeadLetter]:
        taken: list[DeadLetter] = []
        while self._dead and len(taken) < limit:
            taken.append(self._dead.popleft())
        return taken

    @property
    def connected(self) -> bool:
        return True

    async def close(self) -> None:
        await self.stop_consuming()
