"""Retention through the scheduler, on a fake clock and the real SQLite store:
what finished is deleted within a minute of its retention, nothing unfinished
is, and the file stops growing once retention is reached."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import Config, DeliveryConfig
from bridge.config_file import parse_config
from bridge.delivery import DeliveryState
from bridge.errors import ConfigError
from bridge.models import Status
from bridge.retention import (
    PRUNE_BATCH,
    PRUNE_BATCHES_PER_PASS,
    PRUNE_EVERY,
    Horizon,
    Table,
    batches_left,
    horizon,
    too_short,
)
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import REPUBLISH_AFTER, FakeClock, Line, notification

RETENTION = timedelta(minutes=1)
SETTINGS = DeliveryConfig(dedup_window=timedelta(seconds=30))


def retaining(line: Line, retention: timedelta = RETENTION) -> Line:
    line.config = Config.model_validate({**line.config.model_dump(), "retention": retention})
    return line


def pages(path: Path) -> int:
    """Pages the database uses, WAL included: what the file grows by."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return int(db.execute("PRAGMA page_count").fetchone()[0])
    finally:
        db.close()


# -- the pure rule ----------------------------------------------------------------


def test_notifications_are_kept_as_long_as_the_longest_dedup_window() -> None:
    keep = horizon(timedelta(minutes=1), dedup_windows=[timedelta(minutes=5)])
    assert keep == Horizon(finished=timedelta(minutes=1), notifications=timedelta(minutes=5))
    keep = horizon(timedelta(days=30), dedup_windows=[timedelta(minutes=5)])
    assert keep.notifications == timedelta(days=30)


def test_a_retention_shorter_than_a_window_is_refused() -> None:
    windows = {"delivery.dedup_window": timedelta(minutes=5)}
    assert too_short(timedelta(minutes=5), windows) is None
    problem = too_short(timedelta(minutes=4), windows)
    assert problem is not None and "delivery.dedup_window" in problem


def test_another_batch_runs_only_after_a_full_one() -> None:
    assert batches_left({Table.DELIVERIES: 500, Table.ACKS: 0}, 500)
    assert not batches_left({Table.DELIVERIES: 499, Table.NOTIFICATIONS: 499}, 500)
    assert not batches_left({}, 500)


def test_the_config_refuses_a_retention_shorter_than_the_dedup_window() -> None:
    text = """\
telegram:
  token: "123:ABC"
delivery:
  dedup_window: 10m
retention: 5m
route:
  chats: [1]
"""
    with pytest.raises(ConfigError, match=r"bridge\.yaml:5: retention: .*delivery\.dedup_window"):
        parse_config(text, source="bridge.yaml", environ={})
    config = parse_config(text.replace("retention: 5m", "retention: 10m"), environ={})
    assert config.retention == timedelta(minutes=10)
    assert parse_config(text.replace("retention: 5m\n", ""), environ={}).retention == timedelta(
        days=30
    )


# -- through the scheduler --------------------------------------------------------------


async def test_a_finished_delivery_goes_within_a_minute_of_its_retention(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    line = retaining(Line(clock, store, db_path, settings=SETTINGS))
    # A resolution on its own: its thread opens and closes with it.
    (done,) = await line.receive(notification("Done", status=Status.RESOLVED), [1])
    await line.settle(step=1, within=10)
    finished_at = clock.elapsed
    # Unfinished: accepted, never published, so never claimed.
    (waiting,) = await line.receive(notification("Waiting"), [2])
    line.publisher.pending.clear()

    gone_at = None
    while clock.elapsed < finished_at + 3 * RETENTION.total_seconds():
        await line.scheduler.tick()
        line.publisher.pending.clear()  # the waiting row stays unclaimed
        if gone_at is None and await store.state_of(done) is None:
            gone_at = clock.elapsed
        clock.advance(1)

    assert gone_at is not None
    age = gone_at - finished_at
    assert RETENTION.total_seconds() <= age <= (RETENTION + PRUNE_EVERY).total_seconds() + 1
    assert await store.state_of(waiting) is DeliveryState.QUEUED
    assert line.metric("alertbridge_pruned_total", table="deliveries") == 1
    assert line.metric("alertbridge_pruned_total", table="group_threads") == 1


async def test_the_file_stops_growing_once_retention_is_reached(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    line = retaining(Line(clock, store, db_path, settings=SETTINGS))
    sizes: dict[int, int] = {}
    for second in range(0, 6 * 60, 2):
        for i in range(4):
            n = notification(f"N{second}-{i}", status=Status.RESOLVED)
            await line.receive(n, [1 + i % 3])
        await line.settle(step=1, within=10)
        clock.advance(2)
        if second % 60 == 0:
            sizes[second // 60] = pages(db_path)
    # Retention (1 min) plus a pruning period is reached within the second minute;
    # from then on freed pages are reused and the file keeps its size.
    assert sizes[5] <= sizes[3], sizes
    assert line.metric("alertbridge_pruned_total", table="deliveries") > 0


async def test_a_backlog_is_pruned_over_several_ticks_without_waiting_a_period(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    line = retaining(Line(clock, store, db_path, settings=SETTINGS))
    rows = PRUNE_BATCH * PRUNE_BATCHES_PER_PASS + 100
    await line.receive(notification("Everywhere", status=Status.RESOLVED), range(1, rows + 1))
    line.publisher.pending.clear()
    # As an old database holds them: finished long ago (written beside the store).
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE deliveries SET state = 'failed', finished_at = ?", (clock.time(),))
    db.close()
    clock.advance(2 * RETENTION.total_seconds())

    await line.scheduler.tick()
    assert line.metric("alertbridge_pruned_total", table="deliveries") == rows - 100
    clock.advance(1)  # the next tick, not the next period
    await line.scheduler.tick()
    assert line.metric("alertbridge_pruned_total", table="deliveries") == rows
    assert line.metric("alertbridge_pruned_total", table="notifications") == 1


async def test_a_failing_prune_does_not_stop_the_scheduler(
    clock: FakeClock, store: SqliteStore, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = retaining(Line(clock, store, db_path, settings=SETTINGS))

    async def broken(horizon: Horizon, *, limit: int) -> dict[Table, int]:
        raise RuntimeError("a bug in a pruning statement")

    store.prune = broken  # type: ignore[method-assign]
    await line.receive(notification("Waiting"), [1])
    line.publisher.pending.clear()  # the receiver's publish was lost
    clock.advance(REPUBLISH_AFTER.total_seconds())

    assert await line.scheduler.tick() == 1  # republished all the same
    assert "retention: the pass failed" in caplog.text
