"""The queue contract: RabbitMQ and the in-process queue behave alike.

The store is the truth and a queue message only a wake-up, so the contract
is small: every published delivery reaches the handler, in publish order, at
most ``prefetch`` at a time; a handler that raises gets it again; stopping
finishes what is in hand and takes nothing new.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from bridge.config import AmqpConfig
from bridge.errors import QueueUnavailable
from bridge.queue.amqp import AmqpQueue, shard_queue
from bridge.queue.base import Queue
from bridge.queue.local import LocalQueue
from tests.conftest import AMQP_URL, wait_until

PREFETCH = 4


@pytest.fixture(params=["rabbitmq", "in-process"])
async def queue(request: pytest.FixtureRequest, amqp_names: dict[str, str]) -> AsyncIterator[Queue]:
    q: Queue
    if request.param == "rabbitmq":
        q = await AmqpQueue.connect(AMQP_URL, AmqpConfig(**amqp_names, prefetch=PREFETCH))
    else:
        q = LocalQueue(prefetch=PREFETCH)
    yield q
    await q.close()


class Recorder:
    def __init__(self, fail_first: set[int] = frozenset(), hold: float = 0.0) -> None:
        self.started: list[tuple[int, int]] = []
        self.finished: list[int] = []
        self.active = 0
        self.most_active = 0
        self._fail = set(fail_first)
        self._hold = hold

    async def __call__(self, delivery_id: int, chat_id: int) -> None:
        self.started.append((delivery_id, chat_id))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self._hold)
            if delivery_id in self._fail:
                self._fail.discard(delivery_id)
                raise RuntimeError("store unavailable")
            self.finished.append(delivery_id)
        finally:
            self.active -= 1


async def test_every_published_delivery_reaches_the_handler(queue: Queue) -> None:
    handler = Recorder()
    await queue.consume(handler)
    await queue.publish([(i, -1000 - i % 3) for i in range(1, 51)])
    await wait_until(lambda: len(handler.finished) == 50, timeout=20)
    assert sorted(handler.started) == [(i, -1000 - i % 3) for i in range(1, 51)]


async def test_one_chat_is_handed_out_in_publish_order(queue: Queue) -> None:
    handler = Recorder()
    await queue.consume(handler)
    for i in range(1, 21):  # one publish each: the order is the publisher's
        await queue.publish([(i, -42)])
    await wait_until(lambda: len(handler.finished) == 20, timeout=20)
    assert [d for d, _ in handler.started] == list(range(1, 21))


async def test_no_more_than_prefetch_are_in_hand(queue: Queue) -> None:
    handler = Recorder(hold=0.05)
    await queue.consume(handler)
    await queue.publish([(i, -7) for i in range(1, 21)])
    await wait_until(lambda: len(handler.finished) == 20, timeout=20)
    assert 1 < handler.most_active <= PREFETCH


async def test_a_handler_that_raises_gets_the_delivery_again(queue: Queue) -> None:
    handler = Recorder(fail_first={2})
    await queue.consume(handler)
    await queue.publish([(1, -5), (2, -5), (3, -5)])
    await wait_until(lambda: sorted(handler.finished) == [1, 2, 3], timeout=20)
    assert [d for d, _ in handler.started].count(2) == 2


async def test_stopping_finishes_what_is_in_hand_and_takes_nothing_new(queue: Queue) -> None:
    handler = Recorder(hold=0.3)
    await queue.consume(handler)
    await queue.publish([(i, -9) for i in range(1, 11)])
    await wait_until(lambda: handler.active > 0, timeout=20)
    await queue.stop_consuming()
    in_hand = len(handler.started)
    assert handler.active == 0 and len(handler.finished) == in_hand
    await asyncio.sleep(0.5)
    assert len(handler.started) == in_hand < 10


async def test_a_delivery_rabbitmq_cannot_route_is_refused_not_lost(
    amqp_names: dict[str, str],
) -> None:
    """Published mandatory: a wake-up no queue takes is QueueUnavailable (the row
    stays due and the scheduler publishes it again), never a silent success."""
    queue = await AmqpQueue.connect(AMQP_URL, AmqpConfig(**amqp_names, shards=2))
    try:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(shard_queue(amqp_names["queue"], 1))
        await queue.publish([(1, 2)])  # shard 0 still routes
        with pytest.raises(QueueUnavailable, match="did not confirm 2 message"):
            await queue.publish([(2, 2), (3, 3)])  # chat 3: shard 1, gone
    finally:
        await queue.close()
