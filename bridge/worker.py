"""claim → send → record, for one delivery id at a time.

The queue message is acked only after this returns, i.e. after the row's new
state is committed. A worker that dies anywhere in here leaves either an
unclaimed row (redelivered, claimed by another worker) or a row in `sending`
whose lease runs out (the scheduler turns it into `ambiguous`).

The store being away is never the queue's business: a claim that cannot
reach the store holds its message and backs off (a message handed back at
once would come straight round again and be dead-lettered within
milliseconds), and an answer from Telegram is recorded for as long as the
lease protects the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bridge.backoff import jittered
from bridge.config import Config, DeliveryConfig
from bridge.errors import StoreUnavailable
from bridge.logs import delivery_fields
from bridge.metrics import Dependency, Metrics, WaitStage
from bridge.models import Delivery
from bridge.ratelimit import RateLimiter
from bridge.store import Store
from bridge.telegram import Ambiguous, Failed, Migrated, Outcome, Retry, Sent

log = logging.getLogger(__name__)


#: How long a delivery waiting for its rate-limit slot is parked before it
#: is looked at again (seconds).
PARK_AT_MOST = 5.0

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
        *,
        limiter: RateLimiter | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        """``current``: the config in force, asked at each use (a reload changes it)."""
        self._store = store
        # Set at shutdown: a message waiting for the store is let go (acked;
        # the store republishes its row), one already claimed is finished.
        self._stopping = stopping if stopping is not None else asyncio.Event()
        self._sender = sender
        self._current = current
        self._metrics = metrics
        self._rate_limiter = limiter
        # Slots reserved for parked deliveries (delivery id → chat, slot): a
        # delivery keeps its place in its chat's calendar when it comes back.
        self._slots: dict[int, tuple[int, float]] = {}

    @property
    def _settings(self) -> DeliveryConfig:
        return self._current().delivery

    @property
    def _limiter(self) -> RateLimiter | None:
        return self._rate_limiter if self._current().rate_limits.enabled else None

    @property
    def _max_inline_wait(self) -> float:
        return self._current().rate_limits.max_inline_wait.total_seconds()

    @property
    def _digest_after(self) -> int:
        return self._current().rate_limits.digest_after

    async def handle(self, delivery_id: int, chat_id: int) -> None:
        """Claim, send and record one delivery.

        Raises only for a bug: the store's trouble is waited out here, so a
        wake-up is never handed back (and at last dead-lettered) because of it.
        """
        claimed = await self._claim_when_store_answers(delivery_id, chat_id)
        if claimed is None:
            return
        delivery, claimed_at = claimed
        if self._limiter is not None:
            delivery = await self._digest_if_storm(self._limiter, delivery)
            await self._wait_to_send(self._limiter, delivery.chat_id)
        started = time.monotonic()
        outcome = await self._sender.send(delivery)
        if self._limiter is not None and isinstance(outcome, Retry) and outcome.rate_limited:
            assert outcome.delay is not None
            self._limiter.penalize(delivery.chat_id, outcome.delay.total_seconds())
        self._metrics.telegram_latency.labels(type(outcome).__name__.lower()).observe(
            time.monotonic() - started
        )
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
        let_go = time.monotonic() + HOLD_AT_MOST
        attempt = 0
        while True:
            try:
                return await self._claim(delivery_id, chat_id)
            except StoreUnavailable as exc:
                attempt += 1
                pause = jittered(attempt, initial=STORE_BACKOFF_INITIAL, cap=STORE_BACKOFF_MAX)
                if self._stopping.is_set() or time.monotonic() + pause > let_go:
                    log.warning(
                        "delivery %d chat %d: store still unavailable (%s); the scheduler "
                        "publishes it again once the store is back",
                        delivery_id,
                        chat_id,
                        exc,
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
                )
                if await self._stopped_within(pause):
                    return None

    async def _claim(self, delivery_id: int, chat_id: int) -> tuple[Delivery, float] | None:
        if self._limiter is not None and not await self._park_until_slot(delivery_id, chat_id):
            return None
        # The store starts the lease during the claim: a moment taken before it
        # can only make the worker's idea of the lease end early, never late.
        claimed_at = time.monotonic()
        delivery = await self._store.claim(delivery_id, lease=self._settings.lease)
        self._slots.pop(delivery_id, None)  # the claim answered: its slot is used or moot
        if delivery is None:
            # Done, taken, not due, or behind an unfinished one of its group.
            if await self._store.defer(delivery_id, republish_after=self._settings.republish_after):
                self._metrics.claims_deferred.inc()
            else:
                self._metrics.claims_missed.inc()
            return None
        return delivery, claimed_at

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    async def _park_until_slot(self, delivery_id: int, chat_id: int) -> bool:
        """False when the chat's next slot is far off: the row is parked until then."""
        assert self._limiter is not None
        booked = self._slots.get(delivery_id)
        slot = booked[1] if booked is not None else self._limiter.plan(chat_id)
        now = time.monotonic()
        delay = slot - now
        if len(self._slots) > 10_000:  # handed over to another worker, say
            self._slots = {d: b for d, b in self._slots.items() if b[1] > now - 300}
        # Booked until the store answered: a claim or a park that meets a store
        # outage keeps its place in the chat's calendar when it tries again.
        self._slots[delivery_id] = (chat_id, slot)
        if delay <= self._max_inline_wait:
            return True
        # Parked for at most PARK_AT_MOST at a time: a digest may free the
        # chat's calendar meanwhile, and then the row plans afresh.
        if await self._store.postpone(delivery_id, timedelta(seconds=min(delay, PARK_AT_MOST))):
            self._metrics.rate_limit_parked.inc()
        else:
            self._slots.pop(delivery_id, None)
        return False

    async def _digest_if_storm(self, limiter: RateLimiter, delivery: Delivery) -> Delivery:
        """A chat far behind gets its backlog as one digest instead of a long drip."""
        # Only a chat booked more than a few seconds ahead can have a backlog
        # worth a digest; the store is asked only then.
        if not self._digest_after or limiter.planned_ahead(delivery.chat_id) < 3.0:
            return delivery
        try:
            digest = await self._store.coalesce(delivery, threshold=self._digest_after)
        except StoreUnavailable as exc:  # the digest is an optimisation; the delivery goes on
            log.warning("delivery %d: no storm digest: %s", delivery.id, exc)
            return delivery
        if digest is None:
            return delivery
        # The chat's calendar is free again; a row the digest could not take
        # (being republished at that instant) plans a fresh slot when it returns.
        limiter.clear_plan(delivery.chat_id)
        self._slots = {d: b for d, b in self._slots.items() if b[0] != delivery.chat_id}
        self._metrics.deliveries_finished.labels("suppressed", "digest").inc(digest.coalesced)
        self._metrics.digests.inc()
        log.warning(
            "delivery %d chat %d: storm, %d waiting deliveries folded into this digest",
            delivery.id,
            delivery.chat_id,
            digest.coalesced,
            extra=delivery_fields(delivery),
        )
        return digest

    async def _wait_to_send(self, limiter: RateLimiter, chat_id: int) -> None:
        waited = 0.0
        while (wait := limiter.wait_to_send(chat_id)) > 0:
            waited += wait
            await asyncio.sleep(wait)
        self._metrics.rate_limit_wait.observe(waited)

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
                    deadline - time.monotonic(),
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
                await asyncio.sleep(pause)

    async def _record(self, delivery: Delivery, outcome: Outcome) -> None:
        store, metrics, settings = self._store, self._metrics, self._settings
        where = f"delivery {delivery.id} chat {delivery.chat_id} attempt {delivery.attempts}"
        fields = delivery_fields(delivery)
        match outcome:
            case Sent(message_id=message_id, plain_text=plain, reply_to=reply_to):
                await store.mark_delivered(
                    delivery.id, message_id, plain_text=plain, reply_to=reply_to
                )
                metrics.deliveries_finished.labels("delivered", "plain" if plain else "ok").inc()
                thread = f" in reply to {reply_to}" if reply_to else ""
                log.info("%s: delivered as message %d%s", where, message_id, thread, extra=fields)
                if delivery.accepted_at is not None:
                    metrics.delivered_latency.observe(
                        (datetime.now(UTC) - delivery.accepted_at).total_seconds()
                    )
            case Retry(reason=reason, delay=delay):
                if reason.startswith("429"):
                    metrics.telegram_rate_limited.inc()
                if delivery.attempts >= settings.max_attempts:
                    await store.mark_failed(
                        delivery.id, error=f"gave up after {delivery.attempts} attempts: {reason}"
                    )
                    metrics.deliveries_finished.labels("failed", "attempts_exhausted").inc()
                    log.error("%s: gave up: %s", where, reason, extra=fields)
                    return
                wait = delay if delay is not None else backoff(delivery.attempts, settings)
                await store.mark_retry(delivery.id, delay=wait, error=reason)
                metrics.retries.labels(_reason_class(reason)).inc()
                log.warning(
                    "%s: retry in %.1fs: %s", where, wait.total_seconds(), reason, extra=fields
                )
            case Failed(reason=reason):
                await store.mark_failed(delivery.id, error=reason)
                metrics.deliveries_finished.labels("failed", _reason_class(reason)).inc()
                log.error("%s: failed: %s", where, reason, extra=fields)
            case Ambiguous(reason=reason):
                resend = settings.on_ambiguous == "resend"
                await store.mark_ambiguous(delivery.id, error=reason, resend=resend)
                metrics.ambiguous.labels(settings.on_ambiguous).inc()
                log.error(
                    "%s: AMBIGUOUS (%s): Telegram may have the message; policy %s",
                    where,
                    reason,
                    settings.on_ambiguous,
                    extra=fields,
                )
            case Migrated(new_chat_id=new_chat_id):
                await store.follow_migration(delivery.id, delivery.chat_id, new_chat_id)
                log.warning(
                    "%s: chat migrated to %d; following it", where, new_chat_id, extra=fields
                )


def _reason_class(reason: str) -> str:
    """A bounded label value for metrics out of a free-text reason."""
    for prefix, label in (
        ("429", "rate_limited"),
        ("403", "forbidden"),
        ("400", "bad_request"),
        ("can't parse", "parse_error"),
        ("cannot connect", "connect"),
        ("gave up", "attempts_exhausted"),
    ):
        if reason.startswith(prefix):
            return label
    return "server_error" if "ServerError" in reason else "other"
