"""The scheduler on a fake clock: catch-up pages through every due row once and
ends; a due row is republished once per period; expired leases are sorted out."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from bridge.config import DeliveryConfig
from bridge.errors import QueueUnavailable
from bridge.metrics import Metrics
from bridge.scheduler import BATCH, Scheduler
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import (
    REPUBLISH_AFTER,
    FakeClock,
    FakePublisher,
    accept,
    config,
    notification,
)

ROWS = 2000
SETTINGS = DeliveryConfig(republish_after=REPUBLISH_AFTER)


async def two_thousand_due(store: SqliteStore) -> list[int]:
    """One notification to 2,000 chats: one transaction, 2,000 rows."""
    deliveries = await accept(store, notification("Everywhere"), range(1, ROWS + 1))
    return [d for d, _ in deliveries]


async def test_catch_up_publishes_each_of_2000_due_rows_once_and_ends(
    clock: FakeClock, store: SqliteStore
) -> None:
    ids = await two_thousand_due(store)
    publisher = FakePublisher(at_most=2 * ROWS)  # a pass that never ends fails, not hangs
    scheduler = Scheduler(store, publisher, lambda: config(SETTINGS), Metrics(), clock)

    # Published by the receiver already, so only a catch-up pass takes them now.
    assert await scheduler.tick() == 0
    assert await scheduler.tick(catch_up=True) == ROWS
    assert ROWS > 3 * BATCH  # several pages
    assert Counter(publisher.published) == Counter(ids)  # each exactly once
    # The pass pushed each one's republish time forward: the next passes find nothing.
    assert await scheduler.tick() == 0
    assert await scheduler.tick(catch_up=True) == ROWS  # a new catch-up pass: once more each
    assert Counter(publisher.published) == Counter({d: 2 for d in ids})


async def test_due_rows_are_republished_once_per_period(
    clock: FakeClock, store: SqliteStore
) -> None:
    ids = await two_thousand_due(store)
    publisher = FakePublisher(at_most=2 * ROWS)
    metrics = Metrics()
    scheduler = Scheduler(store, publisher, lambda: config(SETTINGS), metrics, clock)

    clock.advance(REPUBLISH_AFTER.total_seconds())  # nobody claimed them: published again
    assert await scheduler.tick() == ROWS
    assert Counter(publisher.published) == Counter(ids)
    assert await scheduler.tick() == 0
    clock.advance(REPUBLISH_AFTER.total_seconds() - 1)
    assert await scheduler.tick() == 0
    clock.advance(1)
    assert await scheduler.tick() == ROWS
    assert metrics.registry.get_sample_value("alertbridge_deliveries_republished_total") == 2 * ROWS
    assert metrics.registry.get_sample_value("alertbridge_queue_depth") == ROWS


class DownPublisher(FakePublisher):
    async def publish(self, deliveries: list[tuple[int, int]]) -> None:
        raise QueueUnavailable("the broker is down")


async def test_a_broker_outage_loses_nothing(clock: FakeClock, store: SqliteStore) -> None:
    ids = await two_thousand_due(store)
    metrics = Metrics()
    clock.advance(REPUBLISH_AFTER.total_seconds())
    assert (
        await Scheduler(store, DownPublisher(), lambda: config(SETTINGS), metrics, clock).tick()
        == 0
    )
    assert metrics.registry.get_sample_value("alertbridge_publish_failures_total") == BATCH

    publisher = FakePublisher()
    up = Scheduler(store, publisher, lambda: config(SETTINGS), metrics, clock)
    clock.advance(REPUBLISH_AFTER.total_seconds())
    assert await up.tick() == ROWS
    assert Counter(publisher.published) == Counter(ids)


async def test_a_lease_that_ran_out_before_the_request_queues_the_row_again(
    clock: FakeClock, store: SqliteStore
) -> None:
    [(d, _)] = await accept(store, notification("DiskFull"), [7])
    lease = timedelta(seconds=60)
    assert await store.claim(d, lease=lease) is not None
    metrics = Metrics()
    publisher = FakePublisher()
    scheduler = Scheduler(
        store, publisher, lambda: config(DeliveryConfig(lease=lease)), metrics, clock
    )

    clock.advance(59)
    assert await scheduler.tick() == 0  # the lease still holds it
    clock.advance(2)
    assert await scheduler.tick() == 1
    assert publisher.published == [d]
    assert metrics.registry.get_sample_value("alertbridge_leases_expired_unsent_total") == 1
    assert await store.claim(d, lease=lease) is not None
