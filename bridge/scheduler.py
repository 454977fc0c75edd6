"""The store's clock: republish what nobody claimed, expire leases nobody renewed.

The receiver publishes right after its commit, so in the happy path this
finds nothing. It is what makes a broker outage, a lost message or a due
retry end in a delivery anyway.

It also reads the dead-letter queue. A dead-lettered message is only a
wake-up for a row the store owns, so recovering it needs no replay: the
unfinished row is published again when its republish time comes, as every
unclaimed row is. Putting dead letters straight back on their shard would
instead send a message that keeps failing round the same loop. What the
scheduler adds is that nobody has to look: each dead letter is counted
(``alertbridge_dead_letters_total``) and logged with its delivery id, and
taken off the dead-letter queue.

And it prunes: every ``PRUNE_EVERY`` it deletes, batch by batch, what the
retention rule (bridge/retention.py) lets go. With several replicas, one at a
time prunes (the store's lock); the others find nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from bridge.clock import Clock
from bridge.config import Config, DeliveryConfig
from bridge.delivery import AmbiguityPolicy
from bridge.errors import QueueUnavailable, StoreUnavailable
from bridge.metrics import Metrics
from bridge.queue.base import DeadLetter
from bridge.retention import (
    PRUNE_BATCH,
    PRUNE_BATCHES_PER_PASS,
    PRUNE_EVERY,
    Table,
    batches_left,
    horizon,
)
from bridge.store import Store

log = logging.getLogger(__name__)

BATCH = 500


class Publisher(Protocol):
    async def publish(self, deliveries: list[tuple[int, int]]) -> None: ...

    async def take_dead_letters(self, limit: int) -> list[DeadLetter]: ...

    @property
    def connected(self) -> bool: ...


class Scheduler:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        current: Callable[[], Config],
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        """``current``: the config in force, asked at each pass (a reload changes it)."""
        self._clock = clock
        self._store = store
        self._publisher = publisher
        self._current = current
        self._metrics = metrics
        #: When the pruner last ran (the clock's monotonic seconds); None: never.
        self._pruned_at: float | None = None

    @property
    def _settings(self) -> DeliveryConfig:
        return self._current().delivery

    @property
    def republish_after(self) -> timedelta:
        return self._settings.republish_after

    async def tick(self, *, catch_up: bool = False) -> int:
        """One pass; returns how many rows were published.

        ``catch_up`` (the first pass over an in-memory queue) also publishes
        rows that were published before: their wake-ups died with the process.
        """
        await self._expire_leases()
        await self.expire_waiting()
        depth, oldest = await self._store.backlog()
        self._metrics.queue_depth.set(depth)
        self._metrics.oldest_queued.set(oldest)
        self._metrics.operator_resends.set(await self._store.operator_resends())
        await self.surface_dead_letters()
        try:
            await self.prune_if_due()
        except StoreUnavailable as exc:
            log.warning("retention: %s; trying again in %s", exc, PRUNE_EVERY)
        except Exception:
            # Deleting old rows is housekeeping: a fault in it must not stop the
            # scheduler from republishing and settling leases.
            log.exception("retention: the pass failed; trying again in %s", PRUNE_EVERY)
        published = 0
        after_id = 0  # catch-up pages by id: each row once per pass
        while True:
            due = await self._store.take_due(
                limit=BATCH,
                republish_after=self.republish_after,
                catch_up=catch_up,
                after_id=after_id,
            )
            if not due:
                return published
            try:
                await self._publisher.publish(due)
            except QueueUnavailable as exc:
                # The rows come due again after republish_after; nothing lost.
                self._metrics.publish_failures.inc(len(due))
                log.warning("scheduler: %s", exc)
                return published
            self._metrics.republished.inc(len(due))
            published += len(due)
            after_id = due[-1][0]
            if len(due) < BATCH:
                return published

    async def _expire_leases(self) -> None:
        policy = AmbiguityPolicy(self._settings.on_ambiguous)
        for expired in await self._store.expire_leases(policy=policy):
            fields = {"delivery_id": expired.delivery_id, "chat_id": expired.chat_id}
            if not expired.written:
                self._metrics.leases_expired_unsent.inc()
                log.warning(
                    "delivery %d chat %d: lease expired before the request was written: "
                    "not sent, queued again",
                    expired.delivery_id,
                    expired.chat_id,
                    extra=fields,
                )
                continue
            self._metrics.ambiguous.labels(policy).inc()
            log.error(
                "delivery %d chat %d: lease expired after the request was written: "
                "AMBIGUOUS, policy %s",
                expired.delivery_id,
                expired.chat_id,
                policy,
                extra=fields,
            )

    async def expire_waiting(self) -> int:
        """Fail the messages that waited for their recipient's link past their expiry
        (not_linked; their receipts written with them); how many."""
        expired = 0
        while True:
            batch = await self._store.expire_waiting(limit=BATCH)
            for gone in batch:
                self._metrics.recipient_links.labels(gone.producer, "expired_message").inc()
                log.warning(
                    "producer %s message %r failed: recipient %r did not link a chat in time",
                    gone.producer,
                    gone.message_id,
                    gone.recipient,
                )
            expired += len(batch)
            if len(batch) < BATCH:
                return expired

    async def prune_if_due(self) -> dict[Table, int]:
        """Prune when ``PRUNE_EVERY`` has passed since the last time (or never ran)."""
        now = self._clock.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY.total_seconds():
            return {}
        self._pruned_at = now
        return await self.prune()

    async def prune(self) -> dict[Table, int]:
        """Delete in batches until a batch finds less than a full one in every table, at
        most ``PRUNE_BATCHES_PER_PASS`` of them; the rows deleted, by table."""
        config = self._current()
        keep = horizon(config.retention, dedup_windows=[config.delivery.dedup_window])
        total: dict[Table, int] = {}
        for _ in range(PRUNE_BATCHES_PER_PASS):
            counts = await self._store.prune(keep, limit=PRUNE_BATCH)
            for table, n in counts.items():
                if n:
                    total[table] = total.get(table, 0) + n
                    self._metrics.pruned.labels(table.value).inc(n)
            if not batches_left(counts, PRUNE_BATCH):
                break
        else:
            # A backlog (the first pass over an old database): the next tick goes on,
            # so republishing and lease expiry never wait behind a long prune.
            self._pruned_at = None
        if total:
            log.info(
                "retention: deleted %s",
                ", ".join(f"{n} {table}" for table, n in sorted(total.items())),
                extra={"pruned": {t.value: n for t, n in total.items()}},
            )
        return total

    async def surface_dead_letters(self) -> int:
        """Count, log and take off the dead-letter queue what landed there; how many."""
        try:
            letters = await self._publisher.take_dead_letters(BATCH)
        except QueueUnavailable as exc:
            log.warning("scheduler: dead letters not read: %s", exc)
            return 0
        for letter in letters:
            self._metrics.dead_letters.labels(letter.reason).inc()
            handed_out = (
                "" if letter.deliveries is None else f", handed out {letter.deliveries} times"
            )
            if letter.delivery_id is None:
                log.error(
                    "a malformed queue message was dead-lettered (%s%s) and is dropped: %r",
                    letter.reason,
                    handed_out,
                    letter.body,
                )
                continue
            log.error(
                "delivery %d chat %s: its queue message was dead-lettered (%s%s); the store "
                "still has the delivery and publishes it again while it is unfinished",
                letter.delivery_id,
                letter.chat_id,
                letter.reason,
                handed_out,
                extra={"delivery_id": letter.delivery_id, "chat_id": letter.chat_id},
            )
        return len(letters)

    async def run(self, stop: asyncio.Event, *, catch_up_first: bool = False) -> None:
        catch_up = catch_up_first
        while not stop.is_set():
            interval = self._settings.scheduler_interval.total_seconds()
            try:
                published = await self.tick(catch_up=catch_up)
                if catch_up and published:
                    log.info("recovered %d unfinished deliveries from the store", published)
                catch_up = False
            except StoreUnavailable as exc:
                log.warning("scheduler: %s; trying again in %.0fs", exc, interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
