"""The store contract: PostgreSQL and the standalone SQLite file behave alike.

Each test runs against both. They read as the delivery state machine's spec:
accept once per occurrence, claim once, finish only under the lease, wait in
the group's line, fold a storm into a digest, and keep the bot's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from bridge.delivery import AmbiguityPolicy, Delivery, DeliveryState, Reason, T, thread_change
from bridge.digest import render_digest
from bridge.errors import StoreUnavailable
from bridge.models import Alert, Notification, Status
from bridge.store import NewDelivery, PostgresStore, Store
from bridge.store.sqlite import SqliteStore
from tests.conftest import PG_ADMIN_URL

LEASE = timedelta(seconds=30)
WINDOW = timedelta(minutes=5)
LATER = timedelta(seconds=30)
S = DeliveryState


@contextlib.asynccontextmanager
async def open_store(kind: str, folder: Path) -> AsyncIterator[Store]:
    """A migrated store of ``kind`` ("postgres": a fresh database; "sqlite": a file in
    ``folder``), removed afterwards."""
    s: Store
    if kind == "sqlite":
        s = await SqliteStore.open(folder / "alertbridge.db")
        await s.migrate()
        try:
            yield s
        finally:
            await s.close()
        return
    name = f"ab_contract_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        s = await PostgresStore.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
        await s.migrate()
        try:
            yield s
        finally:
            await s.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["postgres", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(request.param, tmp_path) as opened:
        yield opened


def notification(name: str = "DiskFull", status: Status = Status.FIRING) -> Notification:
    alert = Alert(
        fingerprint=name,
        status=status,
        labels={"alertname": name},
        annotations={},
        starts_at=datetime(2026, 11, 20, tzinfo=UTC),
        ends_at=None,
    )
    return Notification(
        source="alertmanager",
        receiver="telegram",
        group_key=f'{{}}:{{alertname="{name}"}}',
        status=status,
        alerts=(alert,),
        common_labels={"alertname": name},
    )


def to(*chats: int, thread: int | None = None) -> list[NewDelivery]:
    return [NewDelivery(c, thread, False, "default", f"text for {c}") for c in chats]


async def accept(
    store: Store,
    chats: list[NewDelivery],
    *,
    key: uuid.UUID | None = None,
    group: uuid.UUID | None = None,
    n: Notification | None = None,
    window: timedelta = WINDOW,
) -> list[int]:
    accepted = await store.accept(
        key or uuid.uuid4(),
        group or uuid.uuid4(),
        n or notification(),
        chats,
        dedup_window=window,
        republish_after=LATER,
    )
    return [d for d, _ in accepted.deliveries]


async def send(store: Store, d: int, *, lease: timedelta = LEASE) -> Delivery | None:
    """What the worker does before it writes a request: claim, then begin_send."""
    claimed = await store.claim(d, lease=lease)
    if claimed is None or not await store.apply(T.begin_send, d):
        return None
    return claimed


async def deliver(
    store: Store, claimed: Delivery, message_id: int, reply_to: int | None = None
) -> bool:
    thread = thread_change(claimed.group_ref, reply_to, claimed.resolves_group)
    return await store.mark_delivered(
        claimed.id, message_id, plain_text=False, reply_to=reply_to, thread=thread
    )


async def fail(store: Store, d: int, error: str) -> bool:
    return await store.apply(T.failed, d, reason=Reason.FORBIDDEN, error=error)


async def retry(store: Store, d: int, delay: timedelta) -> bool:
    return await store.apply(T.retry, d, reason=Reason.SERVER_ERROR, error="500", delay=delay)


# -- accept ---------------------------------------------------------------------


async def test_the_same_key_twice_in_the_window_is_one_occurrence(store: Store) -> None:
    key = uuid.uuid4()
    first = await store.accept(
        key, uuid.uuid4(), notification(), to(1, 2), dedup_window=WINDOW, republish_after=LATER
    )
    again = await store.accept(
        key, uuid.uuid4(), notification(), to(1, 2), dedup_window=WINDOW, republish_after=LATER
    )
    assert first.occurrence == 1 and len(first.deliveries) == 2
    assert again.duplicate and again.deliveries == []
    assert await store.state_counts() == {S.QUEUED: 2}


async def test_the_same_key_after_the_window_is_the_next_occurrence(store: Store) -> None:
    key = uuid.uuid4()
    await accept(store, to(1), key=key, window=timedelta(0))
    await asyncio.sleep(0.01)
    again = await store.accept(
        key, uuid.uuid4(), notification(), to(1), dedup_window=timedelta(0), republish_after=LATER
    )
    assert again.occurrence == 2 and len(again.deliveries) == 1


async def test_accepted_rows_are_published_by_the_receiver_not_the_scheduler(
    store: Store,
) -> None:
    await accept(store, to(1))
    assert await store.take_due(limit=10, republish_after=LATER) == []
    # ... unless the wake-ups died with a process: catch-up takes them.
    assert len(await store.take_due(limit=10, republish_after=LATER, catch_up=True)) == 1


# -- claim and finish -------------------------------------------------------------


async def test_a_delivery_is_claimed_once(store: Store) -> None:
    (d,) = await accept(store, to(42))
    claimed = await store.claim(d, lease=LEASE)
    assert claimed is not None and claimed.chat_id == 42 and claimed.attempts == 0
    assert claimed.text == "text for 42" and claimed.accepted_at is not None
    assert await store.claim(d, lease=LEASE) is None
    assert await store.state_counts() == {S.SENDING: 1}
    # Only the request about to be written counts as an attempt, once.
    assert await store.apply(T.begin_send, d)
    assert not await store.apply(T.begin_send, d)


async def test_delivered_records_the_message_and_is_final(store: Store) -> None:
    (d,) = await accept(store, to(42))
    claimed = await send(store, d)
    assert claimed is not None and await deliver(store, claimed, 777)
    assert not await fail(store, d, "too late")  # not under a lease any more
    assert await store.state_counts() == {S.DELIVERED: 1}


async def test_only_the_lease_holder_records_an_outcome(store: Store) -> None:
    (d,) = await accept(store, to(42))
    assert not await fail(store, d, "never claimed")
    assert not await retry(store, d, timedelta(0))


async def test_a_retry_waits_for_its_time(store: Store) -> None:
    (d,) = await accept(store, to(42))
    await send(store, d)
    assert await retry(store, d, timedelta(seconds=0.3))
    assert await store.claim(d, lease=LEASE) is None  # not due yet
    assert await store.take_due(limit=10, republish_after=LATER) == []
    await asyncio.sleep(0.35)
    assert await store.take_due(limit=10, republish_after=LATER) == [(d, 42)]
    again = await store.claim(d, lease=LEASE)
    assert again is not None and again.attempts == 1


async def test_failed_is_terminal(store: Store) -> None:
    (d,) = await accept(store, to(42))
    await send(store, d)
    assert await fail(store, d, "403 blocked")
    assert await store.claim(d, lease=LEASE) is None
    assert await store.state_counts() == {S.FAILED: 1}


async def test_an_expired_lease_is_ambiguous_and_a_late_answer_settles_it(store: Store) -> None:
    (d,) = await accept(store, to(42))
    claimed = await send(store, d, lease=timedelta(seconds=0.05))
    assert claimed is not None
    await asyncio.sleep(0.1)
    expired = await store.expire_leases(policy=AmbiguityPolicy.ASSUME_SENT)
    assert [(e.delivery_id, e.chat_id, e.written) for e in expired] == [(d, 42, True)]
    assert await store.state_counts() == {S.AMBIGUOUS: 1}
    assert await deliver(store, claimed, 5)
    assert await store.state_counts() == {S.DELIVERED: 1}


async def test_a_lease_that_expires_before_the_request_was_written_is_not_ambiguous(
    store: Store,
) -> None:
    (d,) = await accept(store, to(42))
    await store.claim(d, lease=timedelta(seconds=0.05))
    await asyncio.sleep(0.1)
    expired = await store.expire_leases(policy=AmbiguityPolicy.ASSUME_SENT)
    assert [(e.delivery_id, e.written) for e in expired] == [(d, False)]
    assert await store.state_counts() == {S.QUEUED: 1}  # never attempted: simply waiting again
    assert not await store.apply(T.begin_send, d)  # the old claimer may not write now
    again = await store.claim(d, lease=LEASE)
    assert again is not None and again.attempts == 0


async def test_under_resend_an_expired_lease_goes_back_to_retry(store: Store) -> None:
    (d,) = await accept(store, to(42))
    await send(store, d, lease=timedelta(seconds=0.05))
    await asyncio.sleep(0.1)
    expired = await store.expire_leases(policy=AmbiguityPolicy.RESEND)
    assert [(e.delivery_id, e.written) for e in expired] == [(d, True)]
    assert await store.state_counts() == {S.RETRY: 1}
    assert (await store.claim(d, lease=LEASE)) is not None


async def test_ambiguous_from_the_sender_under_each_policy(store: Store) -> None:
    kept, resent = await accept(store, to(1, 2))
    for d in (kept, resent):
        await send(store, d)
    why = {"reason": Reason.TIMEOUT, "error": "timeout"}
    assert await store.apply(T.ambiguous_assume_sent, kept, **why)
    assert await store.apply(T.ambiguous_resend, resent, **why)
    assert await store.state_counts() == {S.AMBIGUOUS: 1, S.RETRY: 1}


async def test_a_postponed_row_is_not_claimable_until_its_slot(store: Store) -> None:
    (d,) = await accept(store, to(42))
    assert await store.apply(T.postpone, d, delay=timedelta(seconds=0.3))
    assert await store.claim(d, lease=LEASE) is None
    await asyncio.sleep(0.35)
    assert await store.take_due(limit=10, republish_after=LATER) == [(d, 42)]
    assert await store.claim(d, lease=LEASE) is not None


async def test_a_row_deferred_before_it_is_due_is_published_when_due(store: Store) -> None:
    (d,) = await accept(store, to(42))
    assert await send(store, d) is not None
    delay = timedelta(seconds=0.3)
    assert await store.apply(T.retry, d, reason=Reason.SERVER_ERROR, error="502", delay=delay)
    assert await store.claim(d, lease=LEASE) is None  # a second queue message, too early
    assert await store.apply(T.defer, d, republish_after=LATER)
    await asyncio.sleep(0.35)
    assert await store.take_due(limit=10, republish_after=LATER) == [(d, 42)]


# -- the group's line and its thread ------------------------------------------------


async def test_resolved_waits_behind_its_firing_and_replies_to_it(store: Store) -> None:
    group = uuid.uuid4()
    (firing,) = await accept(store, to(42), group=group)
    (resolved,) = await accept(store, to(42), group=group, n=notification(status=Status.RESOLVED))
    assert await store.claim(resolved, lease=LEASE) is None  # behind the firing
    assert await store.apply(T.defer, resolved, republish_after=LATER)
    claimed_firing = await send(store, firing)
    assert claimed_firing is not None and await deliver(store, claimed_firing, 100)
    # The firing finished: the resolved one is woken at once, with the anchor.
    assert await store.take_due(limit=10, republish_after=LATER) == [(resolved, 42)]
    claimed = await send(store, resolved)
    assert claimed is not None and claimed.anchor_message_id == 100 and claimed.resolves_group
    assert await deliver(store, claimed, 101, reply_to=100)
    # The thread is closed: the group's next firing starts a new one.
    (next_firing,) = await accept(store, to(42), group=group, n=notification("Again"))
    claimed = await store.claim(next_firing, lease=LEASE)
    assert claimed is not None and claimed.anchor_message_id is None


async def test_a_chat_migration_moves_the_delivery_and_what_comes_after(store: Store) -> None:
    first, waiting = await accept(store, to(-1) + to(-1, thread=9))
    await send(store, first)
    assert await store.follow_migration(first, -1, -100, error="chat migrated")
    for d in (first, waiting):
        claimed = await store.claim(d, lease=LEASE)
        assert claimed is not None and claimed.chat_id == -100
    (later,) = await accept(store, to(-1))  # accepted after: sent to the new id too
    claimed = await store.claim(later, lease=LEASE)
    assert claimed is not None and claimed.chat_id == -100


# -- storms ---------------------------------------------------------------------------


async def test_a_storm_folds_into_one_digest_and_every_row_is_accounted_for(
    store: Store,
) -> None:
    ids = [(await accept(store, to(42), n=notification(f"Storm{i % 3}")))[0] for i in range(12)]
    carrier = await store.claim(ids[0], lease=LEASE)
    assert carrier is not None
    assert await store.coalesce(carrier, threshold=20, render=render_digest) is None  # 11: no storm
    digest = await store.coalesce(carrier, threshold=10, render=render_digest)
    assert digest is not None and digest.coalesced == 11 and digest.group_ref is None
    assert "12" in digest.text and "Storm0" in digest.text
    assert await store.state_counts() == {S.SENDING: 1, S.SUPPRESSED: 11}


async def test_a_storm_in_one_chat_leaves_the_others_alone(store: Store) -> None:
    ids = [(await accept(store, to(42)))[0] for _ in range(5)]
    (other,) = await accept(store, to(43))
    carrier = await store.claim(ids[0], lease=LEASE)
    assert carrier is not None
    assert (await store.coalesce(carrier, threshold=3, render=render_digest)) is not None
    assert await store.claim(other, lease=LEASE) is not None


async def test_a_digest_carried_by_a_resolution_closes_its_thread(store: Store) -> None:
    group = uuid.uuid4()
    (firing,) = await accept(store, to(42), group=group)
    claimed = await send(store, firing)
    assert claimed is not None and await deliver(store, claimed, 100)
    (resolved,) = await accept(store, to(42), group=group, n=notification(status=Status.RESOLVED))
    for i in range(3):
        await accept(store, to(42), n=notification(f"Storm{i}"))
    carrier = await store.claim(resolved, lease=LEASE)
    assert carrier is not None and carrier.anchor_message_id == 100
    digest = await store.coalesce(carrier, threshold=3, render=render_digest)
    assert digest is not None and await store.apply(T.begin_send, resolved)
    assert await deliver(store, digest, 101)
    # The resolution went out inside the digest, not as a reply: the thread is over.
    (again,) = await accept(store, to(42), group=group, n=notification("Again"))
    claimed = await store.claim(again, lease=LEASE)
    assert claimed is not None and claimed.anchor_message_id is None


# -- operators and workers ---------------------------------------------------------------


async def test_backlog_counts_what_is_unfinished(store: Store) -> None:
    a, _ = await accept(store, to(1, 2))
    claimed = await send(store, a)
    assert claimed is not None and await deliver(store, claimed, 1)
    depth, age = await store.backlog()
    assert depth == 1 and age >= 0


async def test_heartbeats_list_the_live_workers(store: Store) -> None:
    assert await store.heartbeat("w1", ttl=timedelta(seconds=10)) == ["w1"]
    assert await store.heartbeat("w2", ttl=timedelta(seconds=10)) == ["w1", "w2"]
    await store.leave("w1")
    assert await store.heartbeat("w2", ttl=timedelta(seconds=10)) == ["w2"]


async def test_the_poller_lock_is_held(store: Store) -> None:
    async with store.poller_lock() as held:
        assert held


async def test_migrate_twice_applies_nothing_the_second_time(store: Store) -> None:
    assert await store.migrate() == []
    assert await store.pending_migrations() == []


# -- the bot's records ---------------------------------------------------------------------


async def test_an_update_is_acted_on_once(store: Store) -> None:
    bot = store.interactions()
    assert await bot.first_sight(7)
    assert not await bot.first_sight(7)
    await bot.forget_update(7)
    assert await bot.first_sight(7)


async def test_an_acked_notification_s_reminders_are_suppressed(store: Store) -> None:
    bot = store.interactions()
    key = uuid.uuid4()
    (d,) = await accept(store, to(42), key=key, window=timedelta(0))
    claimed = await send(store, d)
    assert claimed is not None and await deliver(store, claimed, 900)
    message = await bot.message(42, 900)
    assert message is not None and message.delivery_id == d and message.notification_key == key
    assert message.common_labels == {"alertname": "DiskFull"} and not message.resolved
    assert await bot.ack(message, 1001, "oncall")
    assert not await bot.ack(message, 1002, "someone else")
    await asyncio.sleep(0.01)
    reminder = await store.accept(
        key, uuid.uuid4(), notification(), to(42, 43), dedup_window=timedelta(0),
        republish_after=LATER,
    )  # fmt: skip
    assert reminder.suppressed == 1 and [c for _, c in reminder.deliveries] == [43]


async def test_a_thread_s_first_message_shows_its_group_now_and_a_reply_shows_its_own(
    store: Store,
) -> None:
    bot = store.interactions()
    group = uuid.uuid4()
    (first,) = await accept(store, to(42), group=group)
    claimed = await send(store, first)
    assert claimed is not None and await deliver(store, claimed, 100)
    (grown,) = await accept(store, to(42), group=group, n=notification("DiskFull2"))
    claimed = await send(store, grown)
    assert claimed is not None and await deliver(store, claimed, 101, reply_to=100)

    anchor = await bot.message(42, 100)
    assert anchor is not None and anchor.delivery_id == grown and anchor.message_id == 100
    assert anchor.common_labels == {"alertname": "DiskFull2"} and anchor.acked_by is None
    reply = await bot.message(42, 101)
    assert reply is not None and reply.delivery_id == grown and reply.anchor_message_id == 100
    assert await bot.ack(reply, 1001, "@oncall")
    acked = await bot.message(42, 100)
    assert acked is not None and acked.acked_by == "@oncall" and acked.acked_at is not None

    (resolved,) = await accept(store, to(42), group=group, n=notification(status=Status.RESOLVED))
    claimed = await send(store, resolved)
    assert claimed is not None and await deliver(store, claimed, 102, reply_to=100)
    now = await bot.message(42, 100)
    assert now is not None and now.delivery_id == resolved and now.resolved
    assert now.acked_by is None  # the ack was on what the group showed before
    before = await bot.message(42, 101)
    assert before is not None and before.delivery_id == grown and not before.resolved
    assert await bot.message(42, 999) is None and await bot.message(43, 100) is None


async def test_silences_made_from_telegram_are_kept_and_expire(store: Store) -> None:
    bot = store.interactions()
    (d,) = await accept(store, to(42))
    row = await bot.record_silence(
        silence_id="s-1",
        alertmanager_url="http://am:9093",
        delivery_id=d,
        chat_id=42,
        created_by="oncall",
        ends_at=datetime.now(UTC) + timedelta(hours=1),
    )
    silence = await bot.silence(row)
    assert silence is not None and silence.silence_id == "s-1" and not silence.expired
    await bot.mark_silence_expired("s-1")
    expired = await bot.silence(row)
    assert expired is not None and expired.expired
    assert await bot.silence(row + 1000) is None


# -- SQLite only: one process per file ---------------------------------------------------


async def test_a_second_process_on_the_same_file_is_refused(tmp_path: Path) -> None:
    first = await SqliteStore.open(tmp_path / "alertbridge.db")
    with pytest.raises(StoreUnavailable, match="in use by another alertbridge process"):
        await SqliteStore.open(tmp_path / "alertbridge.db")
    await first.close()
    again = await SqliteStore.open(tmp_path / "alertbridge.db")
    await again.close()


async def test_an_unwritable_place_says_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="sqlite_path"):
        await SqliteStore.open(tmp_path / "missing-dir" / "alertbridge.db")
