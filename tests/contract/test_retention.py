"""Retention against both stores: prune deletes what bridge/retention.py lets go
and nothing that is unfinished, in an open thread, or needed by a dedup decision.

The stores read their own clocks, so the horizons here stand in for time: a
horizon in the past counts every finished row as old enough, a long one none.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.delivery import DeliveryState, T
from bridge.digest import render_digest
from bridge.models import Status
from bridge.retention import Horizon, Table
from bridge.store import Store
from tests.contract.test_store import (
    LEASE,
    accept,
    deliver,
    fail,
    notification,
    open_store,
    send,
    to,
)

S = DeliveryState
#: Everything finished is older than this horizon.
ALL_OLD = timedelta(seconds=-60)
#: Nothing here is older than this one.
NONE_OLD = timedelta(hours=1)
OLD = Horizon(finished=ALL_OLD, notifications=ALL_OLD)


@pytest.fixture(params=["postgres", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(request.param, tmp_path) as opened:
        yield opened


async def delivered(store: Store, d: int, message_id: int, reply_to: int | None = None) -> None:
    claimed = await send(store, d)
    assert claimed is not None and await deliver(store, claimed, message_id, reply_to)


async def finished(store: Store, d: int) -> None:
    """Finished without a message, so in no thread."""
    assert await send(store, d) is not None and await fail(store, d, "blocked")


def deleted(counts: dict[Table, int]) -> dict[Table, int]:
    return {table: n for table, n in counts.items() if n}


async def test_prune_deletes_finished_rows_and_keeps_every_unfinished_one(store: Store) -> None:
    key_done, key_waiting, key_sending = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    done = await accept(store, to(1, 2), key=key_done, n=notification("Done"))
    await finished(store, done[0])
    await finished(store, done[1])
    (waiting,) = await accept(store, to(3), key=key_waiting, n=notification("Waiting"))
    (sending,) = await accept(store, to(4), key=key_sending, n=notification("Sending"))
    assert await send(store, sending) is not None

    counts = await store.prune(OLD, limit=500)

    assert deleted(counts) == {Table.DELIVERIES: 2, Table.NOTIFICATIONS: 1}
    assert [await store.state_of(d) for d in done] == [None, None]
    assert await store.state_of(waiting) is S.QUEUED
    assert await store.state_of(sending) is S.SENDING
    assert deleted(await store.prune(OLD, limit=500)) == {}


async def test_prune_keeps_the_notification_a_dedup_decision_needs(store: Store) -> None:
    key = uuid.uuid4()
    (d,) = await accept(store, to(1), key=key)
    await finished(store, d)

    counts = await store.prune(Horizon(finished=ALL_OLD, notifications=NONE_OLD), limit=500)
    assert deleted(counts) == {Table.DELIVERIES: 1}
    # The delivery is gone, but a copy inside the window is still recognised.
    assert await accept(store, to(1), key=key) == []

    counts = await store.prune(OLD, limit=500)
    assert deleted(counts) == {Table.NOTIFICATIONS: 1}
    # Once the notification is gone, the same content is news again.
    assert len(await accept(store, to(1), key=key)) == 1


async def test_prune_keeps_an_open_thread_and_deletes_it_once_closed(store: Store) -> None:
    group = uuid.uuid4()
    (firing,) = await accept(store, to(1), group=group)
    await delivered(store, firing, 100)

    assert deleted(await store.prune(OLD, limit=500)) == {}
    assert await store.state_of(firing) is S.DELIVERED

    (resolved,) = await accept(store, to(1), group=group, n=notification(status=Status.RESOLVED))
    await delivered(store, resolved, 101, reply_to=100)
    counts = await store.prune(OLD, limit=500)
    assert deleted(counts) == {
        Table.DELIVERIES: 2,
        Table.NOTIFICATIONS: 2,
        Table.GROUP_THREADS: 1,
    }
    # A thread closed within the horizon stays.
    (again,) = await accept(store, to(1), group=group, n=notification("Again"))
    await delivered(store, again, 102)
    (over,) = await accept(store, to(1), group=group, n=notification("Again", Status.RESOLVED))
    await delivered(store, over, 103, reply_to=102)
    kept = Horizon(finished=NONE_OLD, notifications=NONE_OLD)
    assert deleted(await store.prune(kept, limit=500)) == {}


async def test_an_open_thread_keeps_its_first_message_and_latest_reply(store: Store) -> None:
    group = uuid.uuid4()
    (anchor,) = await accept(store, to(1), group=group, n=notification("Still"))
    await delivered(store, anchor, 100)
    replies = []
    for i in range(3):  # new content of a group that keeps firing
        (reply,) = await accept(store, to(1), group=group, n=notification(f"Still{i}"))
        await delivered(store, reply, 101 + i, reply_to=100)
        replies.append(reply)

    counts = await store.prune(OLD, limit=500)

    assert deleted(counts) == {Table.DELIVERIES: 2, Table.NOTIFICATIONS: 2}
    assert [await store.state_of(d) for d in [anchor, *replies]] == [
        S.DELIVERED,
        None,
        None,
        S.DELIVERED,
    ]
    shown = await store.interactions().message(1, 100)
    assert shown is not None and shown.delivery_id == replies[-1]


async def test_prune_keeps_a_digest_while_a_row_it_carried_is_kept(store: Store) -> None:
    ids = [(await accept(store, to(42), n=notification(f"Storm{i}")))[0] for i in range(4)]
    carrier = await store.claim(ids[0], lease=LEASE)
    assert carrier is not None
    digest = await store.coalesce(carrier, threshold=3, render=render_digest)
    assert digest is not None
    # The folded rows are finished, the carrier is not: the folded rows may go,
    # but only once nothing points at the carrier may it go too.
    assert deleted(await store.prune(OLD, limit=500)) == {
        Table.DELIVERIES: 3,
        Table.NOTIFICATIONS: 3,
    }
    assert await store.state_of(ids[0]) is S.SENDING


async def test_prune_deletes_a_carrier_after_the_rows_it_carried(store: Store) -> None:
    ids = [(await accept(store, to(42), n=notification(f"Storm{i}")))[0] for i in range(4)]
    carrier = await store.claim(ids[0], lease=LEASE)
    assert carrier is not None
    digest = await store.coalesce(carrier, threshold=3, render=render_digest)
    assert digest is not None
    assert await store.apply(T.begin_send, ids[0])
    assert await deliver(store, digest, 500)
    # In one batch the carrier is still pointed at; the next one takes it.
    first = await store.prune(OLD, limit=500)
    second = await store.prune(OLD, limit=500)
    assert first[Table.DELIVERIES] + second[Table.DELIVERIES] == 4
    assert [await store.state_of(d) for d in ids] == [None] * 4


async def test_a_digest_stays_while_a_row_it_carried_stays_in_an_open_thread(
    store: Store,
) -> None:
    group = uuid.uuid4()
    (firing,) = await accept(store, to(42), group=group, n=notification("Open"))
    await delivered(store, firing, 100)  # the thread is open from here on
    (update,) = await accept(store, to(42), group=group, n=notification("Open2"))
    storm = [(await accept(store, to(42), n=notification(f"Storm{i}")))[0] for i in range(3)]
    carrier = await store.claim(storm[0], lease=LEASE)
    assert carrier is not None
    digest = await store.coalesce(carrier, threshold=3, render=render_digest)
    assert digest is not None and await store.apply(T.begin_send, storm[0])
    assert await deliver(store, digest, 101)

    counts = await store.prune(OLD, limit=500)

    # The storm's folded rows go; the thread's rows stay, and so does the digest
    # one of them points at.
    assert deleted(counts) == {Table.DELIVERIES: 2, Table.NOTIFICATIONS: 2}
    assert await store.state_of(update) is S.SUPPRESSED
    assert await store.state_of(storm[0]) is S.DELIVERED


async def test_prune_deletes_at_most_limit_rows_per_table_oldest_first(store: Store) -> None:
    ids = []
    for i in range(3):
        (d,) = await accept(store, to(1), n=notification(f"N{i}"))
        await finished(store, d)
        ids.append(d)
    assert deleted(await store.prune(OLD, limit=2)) == {
        Table.DELIVERIES: 2,
        Table.NOTIFICATIONS: 2,
    }
    assert [await store.state_of(d) for d in ids] == [None, None, S.FAILED]


async def test_prune_deletes_the_bot_s_old_records(store: Store) -> None:
    bot = store.interactions()
    # A resolution on its own: its thread opens and closes with it.
    (d,) = await accept(store, to(1), n=notification(status=Status.RESOLVED))
    await delivered(store, d, 10)
    message = await bot.message(1, 10)
    assert message is not None and await bot.ack(message, 7, "ana")
    assert await bot.first_sight(1001)
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    ended = await bot.record_silence(
        silence_id="s1",
        alertmanager_url="http://am",
        delivery_id=d,
        chat_id=1,
        created_by="ana",
        ends_at=long_ago,
    )
    lasting = await bot.record_silence(
        silence_id="s2",
        alertmanager_url="http://am",
        delivery_id=d,
        chat_id=1,
        created_by="ana",
        ends_at=datetime(2100, 1, 1, tzinfo=UTC),
    )

    counts = await store.prune(OLD, limit=500)

    assert deleted(counts) == {
        Table.DELIVERIES: 1,
        Table.NOTIFICATIONS: 1,
        Table.ACKS: 1,
        Table.GROUP_THREADS: 1,
        Table.TELEGRAM_UPDATES: 1,
        Table.BOT_SILENCES: 1,
    }
    assert await bot.silence(ended) is None
    kept = await bot.silence(lasting)
    assert kept is not None and kept.delivery_id is None  # its message is gone, it is not
    assert await bot.first_sight(1001)  # forgotten: a repeat this late is acted on again


async def test_a_producer_s_message_id_is_remembered_as_long_as_its_notification(
    store: Store,
) -> None:
    from tests.contract.test_producer_messages import LATER, message

    (done,) = await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    (d,) = [delivery.id for delivery in done.message.deliveries]
    await finished(store, d)

    counts = await store.prune(OLD, limit=500)
    assert deleted(counts) == {
        Table.DELIVERIES: 1,
        Table.NOTIFICATIONS: 1,
        Table.PRODUCER_MESSAGES: 1,
    }
    # After retention the id is free again: the same message is a new one.
    (again,) = await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    assert again.outcome.value == "accepted"
