"""Dead letters, RabbitMQ's and the in-process queue's alike: what keeps failing
(or cannot be read) ends up where the scheduler can take it, with its reason and
delivery id, and is gone once taken."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest

from bridge.config import AmqpConfig
from bridge.queue.amqp import AmqpQueue, shard_queue
from bridge.queue.base import DeadLetter, DeadLetterReason, Queue
from bridge.queue.local import LocalQueue
from tests.conftest import AMQP_URL, wait_until

LIMIT = 2


@pytest.fixture(params=["rabbitmq", "in-process"])
async def queue(request: pytest.FixtureRequest, amqp_names: dict[str, str]) -> AsyncIterator[Queue]:
    q: Queue
    if request.param == "rabbitmq":
        settings = AmqpConfig(**amqp_names, prefetch=4, delivery_limit=LIMIT)
        q = await AmqpQueue.connect(AMQP_URL, settings)
    else:
        q = LocalQueue(prefetch=4, delivery_limit=LIMIT)
    yield q
    await q.close()


async def take_until_some(queue: Queue) -> list[DeadLetter]:
    taken: list[DeadLetter] = []

    async def some() -> bool:
        taken.extend(await queue.take_dead_letters(10))
        return bool(taken)

    await wait_until(some, timeout=30, interval=0.1)
    return taken


async def test_a_delivery_whose_handler_keeps_failing_is_dead_lettered(queue: Queue) -> None:
    handled: list[int] = []

    async def broken(delivery_id: int, chat_id: int) -> None:
        handled.append(delivery_id)
        raise RuntimeError("a bug in the handler")

    await queue.consume(broken)
    await queue.publish([(7, -1001)])
    [letter] = await take_until_some(queue)

    assert letter.reason is DeadLetterReason.DELIVERY_LIMIT
    assert (letter.delivery_id, letter.chat_id) == (7, -1001)
    assert len(handled) >= LIMIT
    assert await queue.take_dead_letters(10) == []  # taken means gone


async def test_a_malformed_message_is_dead_lettered_as_rejected(
    amqp_names: dict[str, str],
) -> None:
    queue = await AmqpQueue.connect(AMQP_URL, AmqpConfig(**amqp_names, delivery_limit=LIMIT))

    async def never(delivery_id: int, chat_id: int) -> None:
        raise AssertionError("a malformed message reached the handler")

    try:
        await queue.consume(never)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b"not a delivery id"),
                routing_key=shard_queue(amqp_names["queue"], 0),
            )
        [letter] = await take_until_some(queue)
    finally:
        await queue.close()
    assert letter.reason is DeadLetterReason.REJECTED
    assert letter.delivery_id is None and letter.body == b"not a delivery id"
