"""RabbitMQ: durable quorum queues of delivery ids, publisher confirms, manual acks.

Work is split by chat id into ``amqp.shards`` queues, each declared with
single-active-consumer: every worker subscribes to every shard, RabbitMQ
lets one consumer per shard receive, and so one worker owns a chat at a
time (per-chat order and rate limits stay local to it). Workers agree on
who should own which shard (see ``bridge/shards.py``) and hand a shard over
by re-subscribing, which puts them at the back of that shard's line.

A message is only a hint that a delivery row may need work. Losing one is
harmless (the scheduler republishes rows nobody claimed) and a duplicate is
harmless (the claim is conditional), which is what lets the broker restart
without losing or doubling anything.

What RabbitMQ dead-letters (a message handed out ``delivery_limit`` times
without an ack, or rejected as malformed) lands in ``QUEUE.dead``; the
scheduler takes it off there, counts and logs it (see
``Scheduler.surface_dead_letters``). The delivery's row is still in the store,
which publishes it again while it is unfinished: a dead letter is a symptom
to see, never a delivery lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)

from bridge.config import AmqpConfig
from bridge.errors import QueueUnavailable
from bridge.queue.base import DeadLetter, DeadLetterReason, Handler

log = logging.getLogger(__name__)

#: Seconds one publish() may take, confirms included, before QueueUnavailable.
PUBLISH_TIMEOUT = 10
#: AMQP's delivery mode for a message the broker keeps on disk.
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


async def connect_robust(url: str, purpose: str = "") -> AbstractRobustConnection:
    """A connection that reopens itself after a loss; QueueUnavailable when the first
    attempt fails. ``purpose`` names what it is for in that error."""
    try:
        return await aio_pika.connect_robust(url, timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise QueueUnavailable(
            f"cannot connect to RabbitMQ{purpose} ({type(exc).__name__}: {exc}); "
            "check amqp_url and that the broker is up"
        ) from exc


def shard_of(chat_id: int, shards: int) -> int:
    return chat_id % shards


def shard_queue(queue: str, shard: int) -> str:
    return f"{queue}.{shard:02d}"


class AmqpQueue:
    def __init__(self, connection: AbstractRobustConnection, settings: AmqpConfig) -> None:
        self._connection = connection
        self._settings = settings
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._queues: list[AbstractRobustQueue] = []
        self._dead_queue: AbstractRobustQueue | None = None
        self._tags: dict[int, str] = {}  # shard → consumer tag
        self._handler: Callable[[AbstractIncomingMessage], Awaitable[None]] | None = None
        self._in_flight: set[asyncio.Future[None]] = set()

    @classmethod
    async def connect(cls, url: str, settings: AmqpConfig) -> AmqpQueue:
        queue = cls(await connect_robust(url), settings)
        await queue.declare()
        return queue

    async def declare(self) -> None:
        """Declare the topology; the robust channel re-declares it after a reconnect."""
        s = self._settings
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=s.prefetch)
        dead = await channel.declare_exchange(
            f"{s.exchange}.dead", aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(
            f"{s.queue}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead)
        exchange = await channel.declare_exchange(
            s.exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queues = []
        for shard in range(s.shards):
            queue = await channel.declare_queue(
                shard_queue(s.queue, shard),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-single-active-consumer": True,
                    "x-dead-letter-exchange": f"{s.exchange}.dead",
                    "x-delivery-limit": s.delivery_limit,
                },
            )
            await queue.bind(exchange, routing_key=f"shard.{shard}")
            queues.append(queue)
        self._channel, self._exchange, self._queues = channel, exchange, queues
        self._dead_queue = dead_queue

    async def publish(self, deliveries: Sequence[tuple[int, int]]) -> None:
        """Publish (delivery id, chat id) pairs; returns once the broker confirmed all of them.

        Straight on aiormq's channel, beneath aio-pika's Exchange.publish, and
        under one timeout for the whole call rather than one per message: for
        a batch of 1,000 aio-pika's Message objects and per-message timeouts
        were a fifth of the bridge's CPU time of publishing (tests/bench,
        producer_batch). The confirms are still awaited together, and a
        returned (unroutable) or nacked message still raises, as the channel's
        on_return_raises asks.
        """
        if not deliveries:
            return
        exchange, channel = self._exchange, self._channel
        assert exchange is not None and channel is not None, "declare() first"
        shards = self._settings.shards
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                if channel.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
                underlay = await channel.get_underlay_channel()
                await asyncio.gather(
                    *(
                        underlay.basic_publish(
                            str(delivery_id).encode(),
                            exchange=exchange.name,
                            routing_key=f"shard.{shard_of(chat_id, shards)}",
                            properties=aiormq.spec.Basic.Properties(
                                delivery_mode=PERSISTENT, headers={"chat_id": chat_id}
                            ),
                            mandatory=True,
                        )
                        for delivery_id, chat_id in deliveries
                    )
                )
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
            raise QueueUnavailable(
                f"RabbitMQ did not confirm {len(deliveries)} message(s): "
                f"{type(exc).__name__}: {exc}; the scheduler will republish them"
            ) from exc

    async def consume(self, handler: Handler, first: Iterable[int] = ()) -> None:
        """Hand each delivery to ``handler``; ack only after it returned.

        Subscribes to every shard, the ``first`` ones (this worker's share)
        before the rest, so at a fresh start each worker tends to be the
        active consumer of its own. If the handler raises, the message goes
        back to the queue; RabbitMQ's delivery limit dead-letters one that
        keeps failing.
        """

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                delivery_id = int(message.body)
                chat_header = (message.headers or {}).get("chat_id", 0)
                if not isinstance(chat_header, int):
                    raise ValueError(f"chat_id header {chat_header!r}")
                chat_id = chat_header
            except ValueError:
                log.error("dropping a malformed queue message: %r", message.body[:64])
                await message.reject(requeue=False)
                return
            # Shielded: a claimed delivery is always sent and recorded, even
            # when the broker connection drops (aio-pika cancels consumer
            # callbacks then) or shutdown begins. Its message is redelivered
            # and the conditional claim turns the redelivery into a no-op.
            work = asyncio.ensure_future(handler(delivery_id, chat_id))
            self._in_flight.add(work)
            work.add_done_callback(self._in_flight.discard)
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery %d: handler failed; message back to the queue", delivery_id)
                await _quietly(message.nack(requeue=True))
            else:
                await _quietly(message.ack())

        self._handler = on_message
        preferred = [shard for shard in first if 0 <= shard < len(self._queues)]
        for shard in [*preferred, *(i for i in range(len(self._queues)) if i not in preferred)]:
            await self._subscribe(shard)

    async def _subscribe(self, shard: int) -> None:
        assert self._handler is not None, "consume() first"
        self._tags[shard] = await self._queues[shard].consume(self._handler)

    async def step_back(self, shards: Iterable[int]) -> None:
        """Re-subscribe to ``shards``: at the back of their line, so their owner takes over.

        Messages already in hand are still handled and acked; RabbitMQ hands
        the rest of the shard to its next consumer.
        """
        for shard in shards:
            tag = self._tags.pop(shard, None)
            if tag is not None:
                await _quietly(self._queues[shard].cancel(tag))
            await self._subscribe(shard)

    async def stop_consuming(self) -> None:
        """Take no new messages, and wait for the ones in hand to be recorded and acked."""
        for shard, tag in list(self._tags.items()):
            await _quietly(self._queues[shard].cancel(tag))
        self._tags.clear()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def take_dead_letters(self, limit: int) -> list[DeadLetter]:
        """Take up to ``limit`` messages off ``QUEUE.dead``, acking each once read."""
        dead_queue = self._dead_queue
        assert dead_queue is not None, "declare() first"
        letters: list[DeadLetter] = []
        try:
            while len(letters) < limit:
                message = await dead_queue.get(no_ack=False, fail=False, timeout=10)
                if message is None:
                    break
                letters.append(_dead_letter(message))
                await message.ack()
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
            if letters:
                return letters  # the unacked last one comes back at the next look
            raise QueueUnavailable(
                f"cannot read {self._settings.queue}.dead: {type(exc).__name__}: {exc}"
            ) from exc
        return letters

    @property
    def connected(self) -> bool:
        return (
            not self._connection.is_closed
            and self._channel is not None
            and not (self._channel.is_closed)
        )

    async def close(self) -> None:
        await self._connection.close()


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    deaths = headers.get("x-death")
    reason = DeadLetterReason.UNKNOWN
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        # The most recent death comes first.
        raw = deaths[0].get("reason")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        reason = next((r for r in DeadLetterReason if r.value == text), reason)
    try:
        delivery_id: int | None = int(message.body)
    except ValueError:
        delivery_id = None
    chat_id = headers.get("chat_id")
    handed_out = headers.get("x-delivery-count")
    return DeadLetter(
        reason=reason,
        delivery_id=delivery_id,
        chat_id=chat_id if isinstance(chat_id, int) else None,
        deliveries=handed_out if isinstance(handed_out, int) else None,
        body=bytes(message.body[:64]),
    )


async def _quietly(action: Awaitable[object]) -> None:
    # An ack on a channel that died is moot: the broker redelivers the message
    # and the conditional claim makes the redelivery a no-op.
    try:
        await action
    except Exception as exc:  # noqa: BLE001
        log.warning("could not settle a queue message (%s); it will be redelivered", exc)
