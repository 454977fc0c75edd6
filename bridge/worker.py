"""claim → pace → begin → send → record, for one delivery id at a time.

The queue message is acked only after ``handle`` returns, i.e. after the
row's new state is committed. A worker that dies anywhere in here leaves an
unclaimed row (redelivered, claimed by another worker), a claimed row whose
request was never written (its lease runs out and it simply waits again), or
one whose request was written (its lease runs out and it becomes
``ambiguous``: the only window nobody can close, reported, never silent).

The store being away is never the queue's business: a claim that cannot
reach the store holds its message and backs off (a message handed back at
once would come straight round again and be dead-lettered within
milliseconds), and an answer from Telegram is recorded for as long as the
lease protects the row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Protocol

from bridge.backoff import jittered
from bridge.clock import Clock
from bridge.config import Config, DeliveryConfig
from bridge.delivery import (
    AmbiguityPolicy,
    Delivery,
    Reason,
    T,
    ambiguous,
    thread_change,
)
from bridge.digest import render_digest
from bridge.errors import StoreUnavailable
from bridge.logs import delivery_fields
from bridge.metrics import Dependency, Metrics, WaitStage
from bridge.pacer import Go, Later, Pacer
from bridge.store import Store
from bridge.telegram import Ambiguous, Failed, Migrated, Outcome, Retry, Sent

log = logging.getLogger(__name__)

#: Pauses while the store cannot be reached (seconds): short at first (a
#: blip), capped well under any lease so a record gets several tries in it.
STORE_BACKOFF_INITIAL = 0.2
STORE_BACKOFF_MAX = 5.0

#: How long a queue message is held un-acked while its claim waits for the
#: store (seconds). Then it is acked: the row, which the store keeps, comes
#: back with the scheduler's republish. Far below RabbitMQ's consumer timeout
#: (30 minutes), which would close the channel on a message held longer.
HOLD_AT_MOST = 300.0


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...

    async def edit_anchor(self, delivery: Delivery, message_id: int) -> bool: ...


def backoff(attempt: int, settings: DeliveryConfig) -> timedelta:
    """Exponential backoff with equal jitter: spreads a fleet's retries after an outage."""
    return timedelta(
        seconds=jittered(
            attempt,
            initial=settings.backoff_initial.total_seconds(),
            cap=settings.backoff_max.total_seconds(),
        )
    )


class Worker:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        current: Callable[[], Config],
        metrics: Metrics,
        clock: Clock,
        *,
        pacer: Pacer | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        """``current``: the config in force, asked at each use (a reload changes it).
        ``pacer`` paces sends while ``rate_limits.enabled`` says so."""
        self._store = store
        self._sender = sender
        self._current = current
        self._metrics = metrics
        self._clock = clock
        self._rate_pacer = pacer
        # Set at shutdown: a message waiting for the store is let go (acked;
        # the store republishes its row), one already claimed is finished.
        self._stopping = stopping if stopping is not None else asyncio.Event()

    @property
    def _settings(self) -> DeliveryConfig:
        return self._current().delivery

    @property
    def _pacer(self) -> Pacer | None:
        return self._rate_pacer if self._current().rate_limits.enabled else None

    async def handle(self, delivery_id: int, chat_id: int) -> None:
        """Claim, pace, send and record one delivery.

        Raises only for a bug: the store's trouble is waited out here, so a
        wake-up is never handed back (and at last dead-lettered) because of it.
        """
        claimed = await self._claim_when_store_answers(delivery_id, chat_id)
        if claimed is None:
            return
        delivery, claimed_at = claimed
        pacer = self._pacer
        if (
            delivery.written
            and pacer is not None
            and pacer.storm(delivery.chat_id, delivery.backlog) is not None
            and await self._store.apply(T.unbegin, delivery.id)
        ):
            # A storm waits behind it: nothing was written yet, so it goes through
            # the pacer like any claim, to gather the storm into one digest.
            delivery = replace(delivery, written=False, attempts=delivery.attempts - 1)
        if delivery.written:
            # Claimed with its request begun: the chat was free, nothing to wait for.
            if pacer is not None:
                pacer.book(delivery.id, delivery.chat_id)
        else:
            if pacer is not None:
                paced = await self._pace(pacer, delivery)
                if paced is None:
                    return
                delivery = paced
            if not await self._store.apply(T.begin_send, delivery.id):
                # Not ours any more: its lease ran out while pacing, or a storm
                # digest took it in. Nothing was written.
                self._metrics.claims_missed.inc()
                return
            delivery = replace(delivery, attempts=delivery.attempts + 1)
        if pacer is not None:
            await pacer.take(delivery.chat_id)
        started = self._clock.monotonic()
        outcome = await self._sender.send(delivery)
        self._metrics.telegram_latency.labels(type(outcome).__name__.lower()).observe(
            self._clock.monotonic() - started
        )
        if (
            pacer is not None
            and isinstance(outcome, Retry)
            and outcome.reason is Reason.RATE_LIMITED
            and outcome.delay is not None
        ):
            pacer.penalize(delivery.chat_id, outcome.delay.total_seconds())
        await self._record_until_lease_ends(delivery, outcome, claimed_at)
        if isinstance(outcome, Sent) and outcome.reply_to is not None:
            # The thread's first message shows the group's current state.
            edited = await self._sender.edit_anchor(delivery, outcome.reply_to)
            self._metrics.thread_edits.labels("ok" if edited else "failed").inc()

    async def _claim_when_store_answers(
        self, delivery_id: int, chat_id: int
    ) -> tuple[Delivery, float] | None:
        """The claimed delivery and when its lease began (monotonic); None: nothing to send.

        Holds the queue message while the store is away, backing off, up to
        HOLD_AT_MOST or shutdown; then lets it go (acked) and leaves the row,
        which the store still owns, to the scheduler's republish.
        """
        let_go = self._clock.monotonic() + HOLD_AT_MOST
        attempt = 0
        while True:
            try:
                return await self._claim(delivery_id, chat_id)
            except StoreUnavailable as exc:
                attempt += 1
                pause = jittered(attempt, initial=STORE_BACKOFF_INITIAL, cap=STORE_BACKOFF_MAX)
                fields = {"delivery_id": delivery_id, "chat_id": chat_id}
                if self._stopping.is_set() or self._clock.monotonic() + pause > let_go:
                    log.warning(
                        "delivery %d chat %d: store still unavailable (%s); the scheduler "
                        "publishes it again once the store is back",
                        delivery_id,
                        chat_id,
                        exc,
                        extra=fields,
                    )
                    return None
                self._metrics.dependency_waits.labels(Dependency.STORE, WaitStage.CLAIM).inc()
                log.log(
                    logging.WARNING if attempt == 1 else logging.DEBUG,
                    "delivery %d chat %d: cannot claim, store unavailable (%s); "
                    "trying again in %.1fs (attempt %d)",
                    delivery_id,
                    chat_id,
                    exc,
                    pause,
                    attempt,
                    extra=fields,
                )
                if await self._stopped_within(pause):
                    return None

    async def _claim(self, delivery_id: int, chat_id: int) -> tuple[Delivery, float] | None:
        # The store starts the lease during the claim: a moment taken before it
        # can only make the worker's idea of the lease end early, never late.
        claimed_at = self._clock.monotonic()
        pacer = self._pacer
        delivery = await self._store.claim(
            delivery_id,
            lease=self._settings.lease,
            backlog_up_to=pacer.digest_after if pacer is not None else 0,
            # Nothing to wait for: claim and begin the request in one round trip.
            begin=pacer is None or pacer.free_now(delivery_id, chat_id),
        )
        if delivery is None:
            # Done, taken, not due, or behind an unfinished one of its group.
            if await self._store.apply(
                T.defer, delivery_id, republish_after=self._settings.republish_after
            ):
                self._metrics.claims_deferred.inc()
            else:
                self._metrics.claims_missed.inc()
            return None
        return delivery, claimed_at

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock, or less if shutdown begins; True if it did."""
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        stopped = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({sleep, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (sleep, stopped):
            waiter.cancel()
        return self._stopping.is_set()

    async def _pace(self, pacer: Pacer, delivery: Delivery) -> Delivery | None:
        """Wait for the chat's slot; None when the row was handed back to wait in the store."""
        slot = pacer.book(delivery.id, delivery.chat_id)
        match await pacer.wait(delivery.id, delivery.chat_id, slot):
            case Later() as later:
                await self._give_back(pacer, delivery, slot, later)
                return None
            case Go(waited=waited):
                self._metrics.rate_limit_wait.observe(waited)
        # Someone's own message goes as written: it neither waits for a storm
        # nor carries its digest.
        gather = pacer.storm(delivery.chat_id, delivery.backlog) if delivery.foldable else None
        if gather is None:
            return delivery
        if gather > 0:  # the rest of the storm is still arriving
            later = pacer.hold(delivery.id, delivery.chat_id, slot, gather)
            await self._give_back(pacer, delivery, slot, later)
            return None
        # The chat is far behind: what waits goes with this one, as one digest,
        # instead of a long drip.
        digest = await self._digest(pacer, delivery)
        if digest is None:
            return delivery
        pacer.digested(delivery.chat_id)
        return digest

    async def _give_back(self, pacer: Pacer, delivery: Delivery, slot: float, later: Later) -> None:
        """The row waits in the store, its slot kept, no attempt counted."""
        delay = timedelta(seconds=later.delay)
        if await self._store.apply(T.give_back, delivery.id, delay=delay):
            self._metrics.rate_limit_parked.inc()
        else:
            pacer.release(delivery.chat_id, slot)

    async def _digest(self, pacer: Pacer, delivery: Delivery) -> Delivery | None:
        """Fold the chat's waiting deliveries into this one's message."""
        try:
            digest = await self._store.coalesce(
                delivery, threshold=pacer.digest_after, render=render_digest
            )
        except StoreUnavailable as exc:  # the digest is an optimisation; the delivery goes on
            log.warning(
                "delivery %d chat %d: no storm digest: %s",
                delivery.id,
                delivery.chat_id,
                exc,
                extra=delivery_fields(delivery),
            )
            return None
        if digest is None:
            return None
        self._metrics.deliveries_finished.labels("suppressed", Reason.DIGEST).inc(digest.coalesced)
        self._metrics.digests.inc()
        log.warning(
            "delivery %d chat %d: storm, %d waiting deliveries folded into this digest",
            delivery.id,
            delivery.chat_id,
            digest.coalesced,
            extra=delivery_fields(delivery),
        )
        return digest

    async def _record_until_lease_ends(
        self, delivery: Delivery, outcome: Outcome, claimed_at: float
    ) -> None:
        # Telegram's answer is known now; losing it to a store outage would
        # turn a clean delivery into an ambiguous one (and, under `resend`, a
        # duplicate). Keep trying while the lease, begun at the claim, still
        # protects the row; after that the lease logic owns it.
        deadline = claimed_at + self._settings.lease.total_seconds()
        attempt = 0
        while True:
            try:
                await self._record(delivery, outcome)
                return
            except StoreUnavailable as exc:
                attempt += 1
                pause = min(
                    jittered(attempt, initial=STORE_BACKOFF_INITIAL, cap=STORE_BACKOFF_MAX),
                    deadline - self._clock.monotonic(),
                )
                if pause <= 0:
                    self._metrics.unrecorded.inc()
                    log.error(
                        "delivery %d chat %d: the store did not take %s before the lease ran "
                        "out (%s); the scheduler settles it as an expired lease",
                        delivery.id,
                        delivery.chat_id,
                        type(outcome).__name__,
                        exc,
                        extra=delivery_fields(delivery),
                    )
                    return
                self._metrics.dependency_waits.labels(Dependency.STORE, WaitStage.RECORD).inc()
                log.warning(
                    "delivery %d chat %d: cannot record %s yet (%s); trying again in %.1fs",
                    delivery.id,
                    delivery.chat_id,
                    type(outcome).__name__,
                    exc,
                    pause,
                    extra=delivery_fields(delivery),
                )
                await self._clock.sleep(pause)

    async def _record(self, delivery: Delivery, outcome: Outcome) -> None:
        store, metrics, settings = self._store, self._metrics, self._settings
        where = f"delivery {delivery.id} chat {delivery.chat_id} attempt {delivery.attempts}"
        fields = delivery_fields(delivery)
        match outcome:
            case Sent(message_id=message_id, plain_text=plain, reply_to=reply_to):
                await store.mark_delivered(
                    delivery.id,
                    message_id,
                    plain_text=plain,
                    reply_to=reply_to,
                    thread=thread_change(delivery.thread_group, reply_to, delivery.resolves_group),
                )
                metrics.deliveries_finished.labels("delivered", "plain" if plain else "ok").inc()
                thread = f" in reply to {reply_to}" if reply_to else ""
                log.info("%s: delivered as message %d%s", where, message_id, thread, extra=fields)
                if delivery.accepted_at is not None:
                    metrics.delivered_latency.observe(
                        self._clock.time() - delivery.accepted_at.timestamp()
                    )
            case Retry(reason=reason, detail=detail, delay=delay):
                if reason is Reason.RATE_LIMITED:
                    metrics.telegram_rate_limited.inc()
                if delivery.attempts >= settings.max_attempts:
                    gave_up = f"gave up after {delivery.attempts} attempts: {reason}: {detail}"
                    await store.apply(
                        T.failed, delivery.id, reason=Reason.ATTEMPTS_EXHAUSTED, error=gave_up
                    )
                    metrics.deliveries_finished.labels("failed", Reason.ATTEMPTS_EXHAUSTED).inc()
                    log.error("%s: %s", where, gave_up, extra=fields)
                    return
                wait = delay if delay is not None else backoff(delivery.attempts, settings)
                await store.apply(T.retry, delivery.id, reason=reason, error=detail, delay=wait)
                metrics.retries.labels(reason).inc()
                log.warning(
                    "%s: retry in %.1fs: %s: %s",
                    where,
                    wait.total_seconds(),
                    reason,
                    detail,
                    extra=fields,
                )
            case Failed(reason=reason, detail=detail):
                await store.apply(T.failed, delivery.id, reason=reason, error=detail)
                metrics.deliveries_finished.labels("failed", reason).inc()
                log.error("%s: failed: %s: %s", where, reason, detail, extra=fields)
            case Ambiguous(reason=reason, detail=detail):
                policy = AmbiguityPolicy(settings.on_ambiguous)
                await store.apply(ambiguous(policy), delivery.id, reason=reason, error=detail)
                metrics.ambiguous.labels(policy).inc()
                log.error(
                    "%s: AMBIGUOUS (%s: %s): Telegram may have the message; policy %s",
                    where,
                    reason,
                    detail,
                    policy,
                    extra=fields,
                )
            case Migrated(new_chat_id=new_chat_id):
                await store.follow_migration(
                    delivery.id,
                    delivery.chat_id,
                    new_chat_id,
                    error=f"chat migrated to {new_chat_id}",
                )
                log.warning(
                    "%s: chat migrated to %d; following it", where, new_chat_id, extra=fields
                )
