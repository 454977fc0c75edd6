"""The RabbitMQ ingress: producers' messages consumed, stored, and only then acked.

The receiver side runs it (it is the ingest door, beside ``POST /v1/messages``,
and shares the receiver's rules, store and publisher). Topology, declared on
start and again by the robust channel after a reconnect:

- ``amqp.ingress_exchange`` (``alertbridge.ingress``): a durable *topic* exchange,
  bound to the queue with ``#``. Topic, not direct with a binding per producer,
  so a message under a routing key no producer has is not silently unroutable:
  it reaches the bridge and is rejected with a reason the publisher can read.
- ``amqp.ingress_queue`` (``alertbridge.ingress``): a quorum queue with a single
  active consumer: of several receivers, one consumes and the others stand by,
  so a producer's messages are stored in the order published (one receiver
  commits about 3,600 a second on a shared 2-core machine).
- ``INGRESS_EXCHANGE.rejected`` (fanout) → ``INGRESS_QUEUE.rejected`` (quorum):
  what the bridge refuses, with ``x-alertbridge-reason`` (``STATUS:FIELD``, see
  bridge/ingress.py) and ``x-alertbridge-error`` (for people).

Rejected messages are *published* there explicitly (the original body and
properties, plus the reason headers; publisher-confirmed) and then acked,
rather than ``basic.reject``-ed into the queue's dead-letter exchange:
RabbitMQ's own dead-lettering adds only ``x-death`` and cannot carry a
reason of ours. If the process dies between the confirm and the ack, the
message comes back, is decided again, and its rejection is published twice:
a rejection is at least once, an accepted message exactly once (its redelivery
is a replay, acked and dropped).

Messages are handled in batches (up to ``ingress_batch``, or what arrives
within ``ingress_batch_wait`` of the first): one decision each (pure), one
store transaction for the batch, then the acks. A batch is settled (its
wake-ups published, each message acked or set aside) while the next one is
read and stored; the transactions themselves stay one at a time, in the
order the queue hands the messages out. Store unavailable: nothing is
written, and the batch is held unacked and tried again after a backoff:
nothing lost, nothing out of order, no spinning while the store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)

from bridge.backoff import jittered
from bridge.config import AmqpConfig
from bridge.errors import ConfigError, StoreUnavailable
from bridge.ingress import (
    ERROR_HEADER,
    REASON_HEADER,
    Decision,
    Envelope,
    IngressOutcome,
    Rejection,
    conflict,
    decide,
    named_recipient,
    unlinked,
)
from bridge.producer_accept import publish_accepted, store_messages, stored_answer
from bridge.queue.amqp import connect_robust
from bridge.store.base import MessageAccepted, MessageOutcome

if TYPE_CHECKING:
    from bridge.receiver import ReceiverDeps

log = logging.getLogger(__name__)

#: Pauses before a batch the store could not take goes back to the queue (seconds).
STORE_BACKOFF_INITIAL = 0.2
STORE_BACKOFF_MAX = 10.0
#: The longest human error a rejected message's header carries.
MAX_ERROR_HEADER = 1000


def rejected_name(name: str) -> str:
    return f"{name}.rejected"


def envelope_of(message: AbstractIncomingMessage) -> Envelope:
    return Envelope(
        body=bytes(message.body),
        routing_key=message.routing_key or "",
        user_id=message.user_id,
    )


class IngressConsumer:
    def __init__(
        self, connection: AbstractRobustConnection, settings: AmqpConfig, deps: ReceiverDeps
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._deps = deps
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._rejected: AbstractRobustExchange | None = None
        self._tag: str | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failures = 0  # batches in a row that failed unexpectedly

    @classmethod
    async def connect(cls, url: str, settings: AmqpConfig, deps: ReceiverDeps) -> IngressConsumer:
        connection = await connect_robust(url, " for the ingress")
        consumer = cls(connection, settings, deps)
        try:
            await consumer.declare()
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            await connection.close()
            raise ConfigError(
                f"RabbitMQ has {settings.ingress_queue!r} or {settings.ingress_exchange!r} "
                f"(or their .rejected) declared otherwise than the ingress needs ({exc}): "
                "delete them once drained, or name others in amqp.ingress_queue and "
                "amqp.ingress_exchange"
            ) from exc
        except BaseException:
            await connection.close()
            raise
        return consumer

    async def declare(self) -> None:
        s = self._settings
        channel = await self._connection.channel(publisher_confirms=True)
        # Room for the batch in hand and the next one arriving meanwhile.
        await channel.set_qos(prefetch_count=2 * s.ingress_batch)
        rejected = await channel.declare_exchange(
            rejected_name(s.ingress_exchange), aio_pika.ExchangeType.FANOUT, durable=True
        )
        rejected_queue = await channel.declare_queue(
            rejected_name(s.ingress_queue), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await rejected_queue.bind(rejected)
        exchange = await channel.declare_exchange(
            s.ingress_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            s.ingress_queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # One receiver at a time takes the queue (another takes over when
                # it goes): messages are stored in the order published, as one
                # process's batches keep it, rather than raced by several.
                "x-single-active-consumer": True,
                # What RabbitMQ itself dead-letters (an operator's policy) ends
                # up beside the bridge's own rejections, not lost.
                "x-dead-letter-exchange": rejected_name(s.ingress_exchange),
            },
        )
        await queue.bind(exchange, routing_key="#")
        self._channel, self._queue, self._rejected = channel, queue, rejected

    async def start(self) -> None:
        """Consume until ``stop()``."""
        assert self._queue is not None, "declare() first"
        self._loop_task = asyncio.create_task(self._run(), name="ingress")
        self._tag = await self._queue.consume(self._received)
        log.info(
            "RabbitMQ ingress: consuming %s (exchange %s)",
            self._settings.ingress_queue,
            self._settings.ingress_exchange,
        )

    async def _received(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def stop(self) -> None:
        """Take no new messages; finish (store and settle) the ones in hand."""
        if self._queue is not None and self._tag is not None:
            await _quietly(self._queue.cancel(self._tag))
            self._tag = None
        self._stopping.set()
        self._inbox.put_nowait(None)
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)

    def connected(self) -> bool:
        """Consuming now: the connection and its channel are open (the robust
        connection reopens both after a loss, and consuming resumes)."""
        channel = self._channel
        return not self._connection.is_closed and channel is not None and not channel.is_closed

    async def close(self) -> None:
        await self._connection.close()

    # -- the batches ---------------------------------------------------------------

    async def _run(self) -> None:
        # The batch stored last is settled (its wake-ups published, each message
        # acked or set aside) while the next one is read and stored: the store's
        # transactions stay one at a time, in the queue's order.
        settling: asyncio.Task[None] | None = None
        while True:
            batch, last = await self._next_batch()
            if batch:
                try:
                    settle = await self._store(batch)
                except Exception:
                    # Not the input's fault (decide() turns every bad input into a
                    # rejection), but a bug: back to the queue, after a pause that
                    # grows, so it cannot spin.
                    log.exception("ingress: a batch of %d failed; back to the queue", len(batch))
                    await self._back_to_queue(batch)
                    settle = _nothing()
                else:
                    self._failures = 0
                if settling is not None:
                    await settling
                settling = asyncio.create_task(settle)
            if last:
                if settling is not None:
                    await settling
                return

    async def _next_batch(self) -> tuple[list[AbstractIncomingMessage], bool]:
        """Up to ``ingress_batch`` messages: what arrives within ``ingress_batch_wait``
        of the first. True once ``stop()`` was called (after the last one in hand)."""
        loop = asyncio.get_running_loop()
        size = self._settings.ingress_batch
        first = await self._inbox.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = loop.time() + self._settings.ingress_batch_wait.total_seconds()
        while len(batch) < size:
            if self._inbox.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._inbox.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._inbox.get_nowait()
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    async def _store(self, batch: list[AbstractIncomingMessage]) -> Coroutine[None, None, None]:
        """Decide each message and store the batch's good ones in one transaction;
        what is left to do (publish, ack, set aside), to run after."""
        envelopes = [envelope_of(message) for message in batch]
        done = await self._stored(envelopes)
        if done is None:  # stopping while the store is down: let another receiver try
            for message in batch:
                await _quietly(message.nack(requeue=True))
            return _nothing()
        decisions, stored, before = done
        answers = iter(stored)
        acked: list[tuple[AbstractIncomingMessage, Decision, IngressOutcome]] = []
        rejected: list[tuple[AbstractIncomingMessage, Decision, Rejection]] = []
        for index, (message, decision) in enumerate(zip(batch, decisions, strict=True)):
            if index in before:  # not linked now, but stored before: a replay
                answer = before[index]
            elif decision.message is not None:
                answer = next(answers)
            else:
                assert decision.rejection is not None
                rejected.append((message, decision, decision.rejection))
                continue
            if answer.outcome is MessageOutcome.CONFLICT:
                assert decision.request is not None
                refused = conflict(answer.message.request, decision.request)
                rejected.append((message, decision, refused))
            elif answer.outcome is MessageOutcome.ACCEPTED:
                acked.append((message, decision, IngressOutcome.ACCEPTED))
            else:
                acked.append((message, decision, IngressOutcome.REPLAYED))
        return self._settle(stored, acked, rejected)

    async def _accept(
        self, envelopes: list[Envelope]
    ) -> tuple[list[Decision], list[MessageAccepted], dict[int, MessageAccepted]]:
        """The batch decided and its good messages stored, by the HTTP API's rule
        (bridge/producer_accept.py): (each message's decision, what the store
        answered for those to store, in order, and by index the ones refused as
        not linked now that were stored before). StoreUnavailable: nothing stored."""
        deps = self._deps
        rules = deps.rules
        producers = rules.config.producers or {}
        wanted: dict[str, list[str]] = {}
        for envelope in envelopes:
            recipient = named_recipient(envelope)
            if recipient is not None and envelope.routing_key in producers:
                wanted.setdefault(envelope.routing_key, []).append(recipient)
        linked = {
            name: await deps.store.recipient_chats(name, list(dict.fromkeys(recipients)))
            for name, recipients in wanted.items()
        }
        decisions = [decide(rules, e, linked.get(e.routing_key, {})) for e in envelopes]
        before: dict[int, MessageAccepted] = {}
        for index, decision in enumerate(decisions):
            if unlinked(decision) and decision.request is not None:
                found = await deps.store.stored_message(
                    decision.producer, decision.request.message_id
                )
                if found is not None:
                    before[index] = stored_answer(found, decision.request)
        stored = await store_messages(
            deps.store,
            deps.metrics,
            [d.message for d in decisions if d.message is not None],
            rules=rules,
        )
        return decisions, stored, before

    async def _settle(
        self,
        stored: list[MessageAccepted],
        acked: list[tuple[AbstractIncomingMessage, Decision, IngressOutcome]],
        rejected: list[tuple[AbstractIncomingMessage, Decision, Rejection]],
    ) -> None:
        deps = self._deps
        await publish_accepted(deps.publisher, deps.metrics, stored)
        await self._reject_all(rejected)
        for message, decision, outcome in acked:
            await _quietly(message.ack())
            deps.metrics.ingress_messages.labels(decision.producer, outcome).inc()
            log.info(
                "ingress: producer %s message %r %s",
                decision.producer,
                decision.message_id,
                outcome.value,
            )

    async def _stored(
        self, envelopes: list[Envelope]
    ) -> tuple[list[Decision], list[MessageAccepted], dict[int, MessageAccepted]] | None:
        """``_accept``, once the store takes the batch. While it is unavailable the
        batch is held, unacked (nothing is lost if this process dies: the broker
        hands it out again), and tried again after a pause that grows; None if
        ``stop()`` came first. Held, not requeued: a requeued batch would come
        back behind the messages already prefetched, out of order, and on
        RabbitMQ 4 each return counts toward the queue's delivery limit."""
        deps = self._deps
        failures = 0
        while True:
            try:
                return await self._accept(envelopes)
            except StoreUnavailable as exc:
                failures += 1
                producers = deps.rules.config.producers or {}
                for envelope in envelopes:
                    name = envelope.routing_key if envelope.routing_key in producers else ""
                    deps.metrics.ingress_messages.labels(
                        name, IngressOutcome.STORE_UNAVAILABLE
                    ).inc()
                if self._stopping.is_set():
                    log.warning("ingress: the store is unavailable (%s); back to the queue", exc)
                    return None
                pause = jittered(failures, initial=STORE_BACKOFF_INITIAL, cap=STORE_BACKOFF_MAX)
                log.warning(
                    "ingress: %d message(s) not stored, the store is unavailable (%s); "
                    "trying again in %.1fs",
                    len(envelopes),
                    exc,
                    pause,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=pause)

    async def _back_to_queue(self, batch: list[AbstractIncomingMessage]) -> None:
        """After a pause that grows while the trouble lasts."""
        self._failures += 1
        pause = jittered(self._failures, initial=STORE_BACKOFF_INITIAL, cap=STORE_BACKOFF_MAX)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=pause)
        for message in batch:
            await _quietly(message.nack(requeue=True))

    async def _reject_all(
        self, rejected: list[tuple[AbstractIncomingMessage, Decision, Rejection]]
    ) -> None:
        if rejected:
            await asyncio.gather(*(self._reject(*r) for r in rejected))

    async def _reject(
        self, message: AbstractIncomingMessage, decision: Decision, rejection: Rejection
    ) -> None:
        """Publish the message to the rejected exchange with its reason, then ack it."""
        exchange = self._rejected
        assert exchange is not None, "declare() first"
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = rejection.reason
        headers[ERROR_HEADER] = rejection.error[:MAX_ERROR_HEADER]
        if message.user_id is not None:
            # Not as the user_id property: RabbitMQ would check it against the
            # bridge's own user and refuse the copy.
            headers["x-alertbridge-user-id"] = message.user_id
        copy = aio_pika.Message(
            bytes(message.body),
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        try:
            await exchange.publish(copy, routing_key=message.routing_key or "", timeout=10)
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
            # Unacked, it comes back and is decided again.
            log.warning(
                "ingress: could not set aside rejected message %r of %r (%s); it will come back",
                decision.message_id,
                message.routing_key,
                exc,
            )
            await _quietly(message.nack(requeue=True))
            return
        await _quietly(message.ack())
        self._deps.metrics.ingress_messages.labels(decision.producer, rejection.outcome).inc()
        log.warning(
            "ingress: message %r under routing key %r rejected (%s): %s",
            decision.message_id,
            message.routing_key,
            rejection.reason,
            rejection.error,
        )


async def _quietly(action: Awaitable[object]) -> None:
    # A settle on a channel that died is moot: the broker redelivers the message,
    # and deciding it again is a replay (acked) or the same rejection.
    try:
        await action
    except Exception as exc:  # noqa: BLE001
        log.warning("ingress: could not settle a message (%s); it will be redelivered", exc)


async def _nothing() -> None:
    pass
