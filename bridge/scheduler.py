"""The store's clock: republish what nobody claimed, expire leases nobody renewed.

The receiver publishes right after its commit, so in the happy path this
finds nothing. It is what makes a broker outage, a lost message or a due
retry end in a delivery anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Protocol

from bridge.clock import Clock
from bridge.config import DeliveryConfig
from bridge.delivery import AmbiguityPolicy
from bridge.errors import QueueUnavailable, StoreUnavailable
from bridge.metrics import Metrics
from bridge.store import Store

log = logging.getLogger(__name__)

BATCH = 500


class Publisher(Protocol):
    async def publish(self, deliveries: list[tuple[int, int]]) -> None: ...

    @property
    def connected(self) -> bool: ...


class Scheduler:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        settings: DeliveryConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._metrics = metrics

    @property
    def republish_after(self) -> timedelta:
        return self._settings.republish_after

    async def tick(self, *, catch_up: bool = False) -> int:
        """One pass; returns how many rows were published.

        ``catch_up`` (the first pass over an in-memory queue) also publishes
        rows that were published before: their wake-ups died with the process.
        """
        await self._expire_leases()
        depth, oldest = await self._store.backlog()
        self._metrics.queue_depth.set(depth)
        self._metrics.oldest_queued.set(oldest)
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

    async def run(self, stop: asyncio.Event, *, catch_up_first: bool = False) -> None:
        interval = self._settings.scheduler_interval.total_seconds()
        catch_up = catch_up_first
        while not stop.is_set():
            try:
                published = await self.tick(catch_up=catch_up)
                if catch_up and published:
                    log.info("recovered %d unfinished deliveries from the store", published)
                catch_up = False
            except StoreUnavailable as exc:
                log.warning("scheduler: %s; trying again in %.0fs", exc, interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
