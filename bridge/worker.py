"""claim → pace → begin → send → record, for one delivery id at a time.

The queue message is acked only after ``handle`` returns, i.e. after the
row's new state is committed. A worker that dies anywhere in here leaves an
unclaimed row (redelivered, claimed by another worker), a claimed row whose
request was never written (its lease runs out and it simply waits again), or
one whose request was written (its lease runs out and it becomes
``ambiguous``: the only window nobody can close, reported, never silent).
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from datetime import timedelta
from typing import Protocol

from bridge.clock import Clock
from bridge.config import DeliveryConfig
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
from bridge.metrics import Metrics
from bridge.pacer import Go, Later, Pacer
from bridge.store import Store
from bridge.telegram import Ambiguous, Failed, Migrated, Outcome, Retry, Sent

log = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...

    async def edit_anchor(self, delivery: Delivery, message_id: int) -> bool: ...


def backoff(attempt: int, settings: DeliveryConfig) -> timedelta:
    """Exponential backoff with equal jitter: spreads a fleet's retries after an outage."""
    cap = min(
        settings.backoff_max.total_seconds(),
        settings.backoff_initial.total_seconds() * 2 ** max(attempt - 1, 0),
    )
    return timedelta(seconds=cap / 2 + random.uniform(0, cap / 2))


class Worker:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        settings: DeliveryConfig,
        metrics: Metrics,
        clock: Clock,
        *,
        pacer: Pacer | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._pacer = pacer

    async def handle(self, delivery_id: int, chat_id: int) -> None:
        delivery = await self._claim(delivery_id)
        if delivery is None:
            return
        if self._pacer is not None:
            paced = await self._pace(self._pacer, delivery)
            if paced is None:
                return
            delivery = paced
        if not await self._store.apply(T.begin_send, delivery.id):
            # Not ours any more: its lease ran out while pacing, or a storm
            # digest took it in. Nothing was written.
            self._metrics.claims_missed.inc()
            return
        delivery = _attempted(delivery)
        if self._pacer is not None:
            await self._pacer.take(delivery.chat_id)
        started = self._clock.monotonic()
        outcome = await self._sender.send(delivery)
        self._metrics.telegram_latency.labels(type(outcome).__name__.lower()).observe(
            self._clock.monotonic() - started
        )
        if (
            self._pacer is not None
            and isinstance(outcome, Retry)
            and outcome.reason is Reason.RATE_LIMITED
            and outcome.delay is not None
        ):
            self._pacer.penalize(delivery.chat_id, outcome.delay.total_seconds())
        await self._record_until_lease_ends(delivery, outcome)
        if isinstance(outcome, Sent) and outcome.reply_to is not None:
            # The thread's first message shows the group's current state.
            edited = await self._sender.edit_anchor(delivery, outcome.reply_to)
            self._metrics.thread_edits.labels("ok" if edited else "failed").inc()

    async def _claim(self, delivery_id: int) -> Delivery | None:
        delivery = await self._store.claim(
            delivery_id,
            lease=self._settings.lease,
            backlog_up_to=self._pacer.digest_after if self._pacer is not None else 0,
        )
        if delivery is None:
            # Done, taken, not due, or behind an unfinished one of its group.
            if await self._store.apply(
                T.defer, delivery_id, republish_after=self._settings.republish_after
            ):
                self._metrics.claims_deferred.inc()
            else:
                self._metrics.claims_missed.inc()
        return delivery

    async def _pace(self, pacer: Pacer, delivery: Delivery) -> Delivery | None:
        """Wait for the chat's slot; None when the row was handed back to wait in the store."""
        slot = pacer.book(delivery.id, delivery.chat_id)
        match await pacer.wait(delivery.id, delivery.chat_id, slot):
            case Later() as later:
                await self._give_back(pacer, delivery, slot, later)
                return None
            case Go(waited=waited):
                self._metrics.rate_limit_wait.observe(waited)
        gather = pacer.storm(delivery.chat_id, delivery.backlog)
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
        """A chat far behind gets its backlog as one digest instead of a long drip."""
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

    async def _record_until_lease_ends(self, delivery: Delivery, outcome: Outcome) -> None:
        # Telegram's answer is known now; losing it to a database blip would
        # turn a clean delivery into an ambiguous one. Keep trying while the
        # lease still protects the row.
        deadline = self._clock.monotonic() + self._settings.lease.total_seconds()
        pause = 0.2
        while True:
            try:
                await self._record(delivery, outcome)
                return
            except StoreUnavailable as exc:
                if self._clock.monotonic() + pause >= deadline:
                    raise
                log.warning(
                    "delivery %d chat %d: cannot record %s yet (%s); retrying",
                    delivery.id,
                    delivery.chat_id,
                    type(outcome).__name__,
                    exc,
                    extra=delivery_fields(delivery),
                )
                self._metrics.store_retries.inc()
                await self._clock.sleep(pause)
                pause = min(pause * 2, 5.0)

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
                    thread=thread_change(delivery.group_ref, reply_to, delivery.resolves_group),
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


def _attempted(delivery: Delivery) -> Delivery:
    """The delivery as ``begin_send`` left it: one more attempt written."""
    return replace(delivery, attempts=delivery.attempts + 1)
