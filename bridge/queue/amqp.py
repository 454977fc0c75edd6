"""RabbitMQ: a durable quorum queue of delivery ids, publisher confirms, manual acks.

A message is only a hint that a delivery row may need work. Losing one is
harmless (the scheduler republishes rows nobody claimed) and a duplicate is
harmless (the claim is conditional), which is what lets the broker restart
without losing or doubling anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)

from bridge.config import AmqpConfig
from bridge.errors import QueueUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[int, int], Awaitable[None]]  # (delivery id, chat id)

ROUTING_KEY = "delivery"


class AmqpQueue:
    def __init__(self, connection: AbstractRobustConnection, settings: AmqpConfig) -> None:
        self._connection = connection
        self._settings = settings
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._queue: AbstractRobustQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Future[None]] = set()

    @classmethod
    async def connect(cls, url: str, settings: AmqpConfig) -> AmqpQueue:
        try:
            connection = await aio_pika.connect_robust(url, timeout=10)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise QueueUnavailable(
                f"cannot connect to RabbitMQ ({type(exc).__name__}: {exc}); "
                "check amqp_url and that the broker is up"
            ) from exc
        queue = cls(connection, settings)
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
        queue = await channel.declare_queue(
            s.queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": f"{s.exchange}.dead",
                "x-delivery-limit": s.delivery_limit,
            },
        )
        await queue.bind(exchange, routing_key=ROUTING_KEY)
        self._channel, self._exchange, self._queue = channel, exchange, queue

    async def publish(self, deliveries: Sequence[tuple[int, int]]) -> None:
        """Publish (delivery id, chat id) pairs; returns once the broker confirmed all of them."""
        if not deliveries:
            return
        exchange = self._exchange
        assert exchange is not None, "declare() first"
        try:
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            str(delivery_id).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            headers={"chat_id": chat_id},
                        ),
                        routing_key=ROUTING_KEY,
                        mandatory=True,
                        timeout=10,
                    )
                    for delivery_id, chat_id in deliveries
                )
            )
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
            raise QueueUnavailable(
                f"RabbitMQ did not confirm {len(deliveries)} message(s): "
                f"{type(exc).__name__}: {exc}; the scheduler will republish them"
            ) from exc

    async def consume(self, handler: Handler) -> None:
        """Hand each delivery id to ``handler``; ack only after it returned.

        If the handler raises, the message goes back to the queue; RabbitMQ's
        delivery limit dead-letters one that keeps failing.
        """
        queue = self._queue
        assert queue is not None, "declare() first"

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

        self._consumer_tag = await queue.consume(on_message)

    async def stop_consuming(self) -> None:
        """Take no new messages, and wait for the ones in hand to be recorded and acked."""
        if self._queue is not None and self._consumer_tag is not None:
            await _quietly(self._queue.cancel(self._consumer_tag))
            self._consumer_tag = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    @property
    def connected(self) -> bool:
        return (
            not self._connection.is_closed
            and self._channel is not None
            and not (self._channel.is_closed)
        )

    async def close(self) -> None:
        await self._connection.close()


async def _quietly(action: Awaitable[object]) -> None:
    # An ack on a channel that died is moot: the broker redelivers the message
    # and the conditional claim makes the redelivery a no-op.
    try:
        await action
    except Exception as exc:  # noqa: BLE001
        log.warning("could not settle a queue message (%s); it will be redelivered", exc)
