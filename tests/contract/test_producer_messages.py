"""Producers' own messages in the store: stored once per (producer, message_id),
replayed or refused by their request hash, in one transaction per batch, and
never folded into a storm digest. Both stores."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from pathlib import Path

from bridge.delivery import DeliveryState, thread_change
from bridge.digest import render_digest
from bridge.producers import message_key, producer_line
from bridge.store import NewDelivery, Store
from bridge.store.base import MessageOutcome, NewMessage
from bridge.store.sqlite import SqliteStore
from tests.contract.test_store import (
    LATER,
    LEASE,
    accept,
    deliver,
    notification,
    open_store,
    send,
    store,
    to,
)

__all__ = ["store"]  # the fixture, both stores

S = DeliveryState
Out = MessageOutcome


def message(
    message_id: str,
    *chats: int,
    request: str = '{"text":"hi"}',
    producer: str = "billing",
    buttons: str | None = None,
    line: bool = False,
) -> NewMessage:
    return NewMessage(
        key=message_key(producer, message_id),
        producer=producer,
        message_id=message_id,
        request_hash=hashlib.sha256(request.encode()).hexdigest(),
        request=request,
        deliveries=[NewDelivery(c, None, False, "", f"<b>{message_id}</b>") for c in chats],
        buttons=buttons,
        disable_link_preview=buttons is not None,
        line=producer_line(producer) if line else None,
    )


async def test_a_message_is_stored_with_its_deliveries(store: Store) -> None:
    (done,) = await store.accept_messages([message("inv-1", 42, 43)], republish_after=LATER)
    assert done.outcome is Out.ACCEPTED
    stored = done.message
    assert stored.message_id == "inv-1" and stored.request == '{"text":"hi"}'
    assert [(d.chat_id, d.state, d.attempts) for d in stored.deliveries] == [
        (42, S.QUEUED, 0),
        (43, S.QUEUED, 0),
    ]
    claimed = await store.claim(stored.deliveries[0].id, lease=LEASE)
    assert claimed is not None
    assert claimed.text == "<b>inv-1</b>" and claimed.own_message and not claimed.foldable
    assert claimed.buttons is None and not claimed.disable_link_preview
    assert claimed.group_ref is None  # nobody's thread: it never replies to anything


async def test_buttons_and_the_link_preview_choice_go_with_each_delivery(store: Store) -> None:
    buttons = '[[{"text": "Pay", "url": "https://example.com/pay"}]]'
    (done,) = await store.accept_messages(
        [message("p", 42, 43, buttons=buttons)], republish_after=LATER
    )
    for d in done.message.deliveries:
        claimed = await store.claim(d.id, lease=LEASE)
        assert claimed is not None
        assert (claimed.buttons, claimed.disable_link_preview) == (buttons, True)


async def test_the_same_request_again_is_a_replay_and_adds_nothing(store: Store) -> None:
    (first,) = await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    (again,) = await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    assert again.outcome is Out.REPLAYED
    assert again.message == first.message
    assert await store.state_counts() == {S.QUEUED: 1}


async def test_another_request_under_the_same_id_is_a_conflict(store: Store) -> None:
    await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    (other,) = await store.accept_messages(
        [message("inv-1", 43, request='{"text":"bye"}')], republish_after=LATER
    )
    assert other.outcome is Out.CONFLICT
    assert other.message.request == '{"text":"hi"}'  # what was stored, to name the difference
    assert [d.chat_id for d in other.message.deliveries] == [42]
    assert await store.state_counts() == {S.QUEUED: 1}


async def test_message_ids_are_each_producer_s_own(store: Store) -> None:
    await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    (theirs,) = await store.accept_messages(
        [message("inv-1", 42, producer="shop", request='{"text":"other"}')],
        republish_after=LATER,
    )
    assert theirs.outcome is Out.ACCEPTED
    found = await store.stored_message("shop", "inv-1")
    assert found is not None and found.request == '{"text":"other"}'
    assert await store.stored_message("nobody", "inv-1") is None
    assert await store.stored_message("billing", "inv-2") is None


async def test_a_batch_answers_each_message_on_its_own(store: Store) -> None:
    await store.accept_messages([message("old", 42)], republish_after=LATER)
    results = await store.accept_messages(
        [
            message("a", 42),
            message("old", 42),
            message("b", 43),
            message("a", 42, request='{"text":"changed"}'),
            message("b", 43),
        ],
        republish_after=LATER,
    )
    assert [r.outcome for r in results] == [
        Out.ACCEPTED,
        Out.REPLAYED,
        Out.ACCEPTED,
        Out.CONFLICT,
        Out.REPLAYED,
    ]
    assert await store.state_counts() == {S.QUEUED: 3}


async def test_the_same_message_at_once_is_stored_once(store: Store) -> None:
    results = await asyncio.gather(
        *(store.accept_messages([message("race", 42)], republish_after=LATER) for _ in range(4))
    )
    outcomes = sorted(r.outcome for (r,) in results)
    assert outcomes == [Out.ACCEPTED, Out.REPLAYED, Out.REPLAYED, Out.REPLAYED]
    assert await store.state_counts() == {S.QUEUED: 1}


async def test_batches_sharing_messages_in_opposite_orders_both_commit(store: Store) -> None:
    # Each batch's inserts lock their keys until it commits: taken in the order
    # given, two such batches would each wait for the other (a deadlock, a 503).
    ids = [f"shared-{i}" for i in range(200)]
    forward = [message(i, 42) for i in ids]
    first, second = await asyncio.gather(
        store.accept_messages(forward, republish_after=LATER),
        store.accept_messages(forward[::-1], republish_after=LATER),
    )
    assert [r.message.message_id for r in first] == ids  # each answer in its request's order
    assert [r.message.message_id for r in second] == ids[::-1]
    outcomes = [r.outcome for r in first] + [r.outcome for r in second]
    assert outcomes.count(Out.ACCEPTED) == len(ids)
    assert outcomes.count(Out.REPLAYED) == len(ids)
    assert await store.state_counts() == {S.QUEUED: len(ids)}


async def test_single_messages_racing_batches_over_the_same_keys_all_commit(
    store: Store,
) -> None:
    # A single message takes no key lock (PostgreSQL): it must neither deadlock
    # with the batches that hold the locks nor be stored twice beside them.
    ids = [f"mixed-{i}" for i in range(60)]
    forward = [message(i, 42) for i in ids]
    answers = await asyncio.gather(
        store.accept_messages(forward, republish_after=LATER),
        *(store.accept_messages([m], republish_after=LATER) for m in forward[::-1]),
        store.accept_messages(forward[::-1], republish_after=LATER),
    )
    outcomes = [r.outcome for answer in answers for r in answer]
    assert outcomes.count(Out.ACCEPTED) == len(ids)
    assert outcomes.count(Out.REPLAYED) == 2 * len(ids)
    assert await store.state_counts() == {S.QUEUED: len(ids)}


async def test_a_batch_s_deliveries_are_ordered_as_the_batch_is(store: Store) -> None:
    """A producer's messages reach a chat in the order accepted: within one batch, the
    order given, whatever order the keys sort in (the deliveries' ids are that order)."""
    ids = [f"seq-{i:02d}" for i in range(40)]
    assert sorted(ids, key=lambda i: message_key("billing", i)) != ids  # keys sort otherwise
    done = await store.accept_messages(
        [message(i, 42, line=True) for i in ids], republish_after=LATER
    )
    by_id = sorted(done, key=lambda r: r.message.deliveries[0].id)
    assert [r.message.message_id for r in by_id] == ids


async def test_a_storm_digest_never_folds_a_producer_s_message(store: Store) -> None:
    alerts = [(await accept(store, to(42), n=notification(f"Storm{i}")))[0] for i in range(4)]
    own = await store.accept_messages(
        [message(f"own-{i}", 42) for i in range(3)], republish_after=LATER
    )
    carrier = await store.claim(alerts[0], lease=LEASE)
    assert carrier is not None
    digest = await store.coalesce(carrier, threshold=3, render=render_digest)
    assert digest is not None and digest.coalesced == 3  # the alerts, not the messages
    for done in own:
        (d,) = done.message.deliveries
        assert await store.state_of(d.id) is S.QUEUED


async def test_a_full_batch_of_a_thousand_is_stored(store: Store) -> None:
    batch = [message(f"bulk-{i}", 42) for i in range(1000)]
    results = await store.accept_messages(batch, republish_after=LATER)
    assert {r.outcome for r in results} == {Out.ACCEPTED}
    assert await store.state_counts() == {S.QUEUED: 1000}


async def test_a_producer_s_messages_reach_a_chat_in_the_order_accepted(store: Store) -> None:
    first, second, elsewhere, theirs = await store.accept_messages(
        [
            message("1", 42, line=True),
            message("2", 42, line=True),
            message("3", 43, line=True),
            message("4", 42, line=True, producer="shop"),
        ],
        republish_after=LATER,
    )
    (d1,), (d2,) = first.message.deliveries, second.message.deliveries
    assert await store.claim(d2.id, lease=LEASE) is None  # behind the first, in its chat
    for other in (elsewhere, theirs):  # another chat, another producer: not held up
        assert await store.claim(other.message.deliveries[0].id, lease=LEASE) is not None
    claimed = await send(store, d1.id)
    assert claimed is not None and claimed.thread_group is None
    thread = thread_change(claimed.thread_group, None, claimed.resolves_group)
    assert await store.mark_delivered(d1.id, 500, plain_text=False, reply_to=None, thread=thread)
    after = await store.claim(d2.id, lease=LEASE)
    assert after is not None and after.anchor_message_id is None  # a line, not a thread


async def test_a_message_without_deliveries_is_stored_and_found(store: Store) -> None:
    # Labels that no route took: nothing to send, and still a message the producer can ask about.
    (done,) = await store.accept_messages([message("nowhere")], republish_after=LATER)
    assert done.outcome is Out.ACCEPTED and done.message.deliveries == []
    (again,) = await store.accept_messages([message("nowhere")], republish_after=LATER)
    assert again.outcome is Out.REPLAYED
    found = await store.stored_message("billing", "nowhere")
    assert found is not None and found.deliveries == []


async def test_a_status_lookup_follows_each_write_as_soon_as_it_committed(store: Store) -> None:
    """What GET /v1/messages/{id} reads (SQLite: on its own read-only connection)
    holds every write committed before it, the accept and each step after."""
    assert await store.stored_message("billing", "inv-1") is None
    (done,) = await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
    found = await store.stored_message("billing", "inv-1")
    assert found is not None and [d.state for d in found.deliveries] == [S.QUEUED]
    delivery = done.message.deliveries[0].id
    claimed = await send(store, delivery)
    assert claimed is not None
    found = await store.stored_message("billing", "inv-1")
    assert found is not None and [d.state for d in found.deliveries] == [S.SENDING]
    assert await deliver(store, claimed, 777)
    found = await store.stored_message("billing", "inv-1")
    assert found is not None
    assert [(d.state, d.telegram_message_id) for d in found.deliveries] == [(S.DELIVERED, 777)]


async def test_sqlite_status_lookups_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    """A lookup is answered while a write holds the store's one writer thread,
    and sees what was committed before, not the write in progress."""
    async with open_store("sqlite", tmp_path) as store:
        assert isinstance(store, SqliteStore)
        await store.accept_messages([message("inv-1", 42)], republish_after=LATER)
        writing, release = threading.Event(), threading.Event()

        def slow_write(db: sqlite3.Connection, now: float) -> None:
            db.execute("DELETE FROM deliveries")  # not committed until released
            writing.set()
            release.wait(timeout=60)

        held = asyncio.ensure_future(store._run(slow_write))
        try:
            await asyncio.to_thread(writing.wait, 60)
            # On the writer's thread, this lookup would wait for the release: a hang
            # the timeout turns into a failure.
            found = await asyncio.wait_for(store.stored_message("billing", "inv-1"), 30)
            assert found is not None and [d.chat_id for d in found.deliveries] == [42]
        finally:
            release.set()
            await held
        found = await store.stored_message("billing", "inv-1")
        assert found is not None and found.deliveries == []
