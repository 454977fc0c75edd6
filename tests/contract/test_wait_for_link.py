"""Messages that wait for their recipient's link ("wait_for_link": true): stored with
no delivery, given their deliveries by the link in the same transaction and in the
order accepted, or failed (not_linked) once expired. Both stores.

The stores read their own clocks: a wait's expiry is given as a duration (negative:
expired already), as a link's is in test_recipients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta

from bridge.delivery import DeliveryState
from bridge.producers import message_key, producer_line
from bridge.recipients import token_hash
from bridge.retention import Horizon, Table
from bridge.store import Store
from bridge.store.base import MessageOutcome, NewMessage, WaitingDelivery
from tests.contract.test_recipients import ANN_CHAT, ANN_NEW_CHAT, BOB_CHAT, link, use
from tests.contract.test_retention import NONE_OLD, OLD, deleted
from tests.contract.test_store import LATER, LEASE, store

__all__ = ["store"]  # the fixture, both stores

S = DeliveryState
Out = MessageOutcome
DAY = timedelta(days=1)
EXPIRED = timedelta(seconds=-1)


def waiting(
    message_id: str,
    recipient: str = "ann",
    *,
    producer: str = "billing",
    expires_after: timedelta = DAY,
    receipts: bool = False,
) -> NewMessage:
    request = json.dumps({"recipient": recipient, "text": message_id, "wait_for_link": True})
    return NewMessage(
        key=message_key(producer, message_id),
        producer=producer,
        message_id=message_id,
        request_hash=hashlib.sha256(request.encode()).hexdigest(),
        request=request,
        deliveries=[],
        line=producer_line(producer),
        receipts=receipts,
        waiting=WaitingDelivery(recipient, None, False, f"<b>{message_id}</b>", expires_after),
    )


async def accept(store: Store, *messages: NewMessage) -> list[Out]:
    done = await store.accept_messages(messages, republish_after=LATER)
    return [d.outcome for d in done]


async def chats_of(store: Store, producer: str, message_id: str) -> list[int]:
    found = await store.stored_message(producer, message_id)
    assert found is not None
    return [d.chat_id for d in found.deliveries]


async def test_a_waiting_message_is_stored_without_deliveries(store: Store) -> None:
    await link(store, "ann")  # asked for, not opened yet
    (done,) = await store.accept_messages([waiting("w-1")], republish_after=LATER)
    assert done.outcome is Out.ACCEPTED and done.message.deliveries == []
    assert done.message.wait is not None and not done.message.wait.expired
    assert done.message.wait.recipient == "ann"
    assert await store.take_due(limit=10, republish_after=LATER) == []
    # The same again while waiting: a replay, still nothing to send.
    assert await accept(store, waiting("w-1")) == [Out.REPLAYED]
    found = await store.stored_message("billing", "w-1")
    assert found is not None and found.deliveries == [] and found.wait is not None


async def test_the_link_creates_the_waiting_deliveries_in_the_order_accepted(
    store: Store,
) -> None:
    token = await link(store, "ann")
    assert await accept(store, waiting("w-1"), waiting("w-2")) == [Out.ACCEPTED] * 2
    assert await accept(store, waiting("w-3")) == [Out.ACCEPTED]
    # Not ann's: another recipient, another producer's ann.
    await accept(store, waiting("b-1", "bob"), waiting("s-1", producer="shop"))

    linked = await store.interactions().consume_link(token_hash(token), ANN_CHAT)
    assert linked is not None and linked.released == ("w-1", "w-2", "w-3")
    ids = []
    for message_id in ("w-1", "w-2", "w-3"):
        found = await store.stored_message("billing", message_id)
        assert found is not None and found.wait is None
        (d,) = found.deliveries
        assert (d.chat_id, d.state, d.attempts) == (ANN_CHAT, S.QUEUED, 0)
        ids.append(d.id)
    assert ids == sorted(ids)
    # Due for the scheduler at once (the bot that linked has no publisher).
    assert await store.take_due(limit=10, republish_after=LATER) == [(i, ANN_CHAT) for i in ids]
    claimed = await store.claim(ids[0], lease=LEASE)
    assert claimed is not None and claimed.text == "<b>w-1</b>" and claimed.own_message
    assert await store.claim(ids[1], lease=LEASE) is None  # behind w-1 in its chat
    for other, producer in (("b-1", "billing"), ("s-1", "shop")):
        assert await chats_of(store, producer, other) == []
    # Linked now: a replay is answered from the store and adds nothing.
    assert await accept(store, waiting("w-1")) == [Out.REPLAYED]
    assert await chats_of(store, "billing", "w-1") == [ANN_CHAT]
    # A re-link elsewhere moves nothing already given a delivery.
    again = await store.interactions().consume_link(
        token_hash(await link(store, "ann")), ANN_NEW_CHAT
    )
    assert again is not None and again.released == ()
    assert await chats_of(store, "billing", "w-2") == [ANN_CHAT]


async def test_a_message_to_a_recipient_linked_meanwhile_gets_its_delivery_at_once(
    store: Store,
) -> None:
    # Checked unlinked before the store's transaction, linked by the time it runs:
    # the store reads the recipient again under its lock, so it never waits in vain.
    assert await use(store, await link(store, "ann"), ANN_CHAT)
    (done,) = await store.accept_messages([waiting("w-1")], republish_after=LATER)
    assert done.outcome is Out.ACCEPTED and done.message.wait is None
    assert [d.chat_id for d in done.message.deliveries] == [ANN_CHAT]


async def test_two_links_at_once_release_each_waiting_message_once(store: Store) -> None:
    tokens = [await link(store, "ann") for _ in range(3)]
    await accept(store, *(waiting(f"w-{i}") for i in range(5)))
    results = await asyncio.gather(
        *(
            store.interactions().consume_link(token_hash(t), chat)
            for t, chat in zip(tokens, (ANN_CHAT, ANN_NEW_CHAT, BOB_CHAT), strict=True)
        )
    )
    released = [r.released for r in results if r is not None and r.released]
    assert released == [tuple(f"w-{i}" for i in range(5))]
    for i in range(5):
        assert len(await chats_of(store, "billing", f"w-{i}")) == 1


async def test_a_message_accepted_while_the_link_is_used_is_never_left_waiting(
    store: Store,
) -> None:
    for round_ in range(10):
        recipient = f"ann-{round_}"
        token = await link(store, recipient)
        await asyncio.gather(
            store.accept_messages([waiting(f"w-{round_}", recipient)], republish_after=LATER),
            store.interactions().consume_link(token_hash(token), ANN_CHAT),
        )
        found = await store.stored_message("billing", f"w-{round_}")
        assert found is not None and found.wait is None
        assert [d.chat_id for d in found.deliveries] == [ANN_CHAT]


async def test_a_waiting_message_expires_failed_not_linked_with_its_receipt(
    store: Store,
) -> None:
    token = await link(store, "ann")
    await accept(
        store,
        waiting("late", expires_after=EXPIRED, receipts=True),
        waiting("quiet", expires_after=EXPIRED),
        waiting("early"),
    )
    # Past its expiry a link no longer takes it, even before the scheduler marked it.
    linked = await store.interactions().consume_link(token_hash(token), ANN_CHAT)
    assert linked is not None and linked.released == ("early",)
    gone = await store.expire_waiting(limit=10)
    assert sorted((g.producer, g.message_id, g.recipient) for g in gone) == [
        ("billing", "late", "ann"),
        ("billing", "quiet", "ann"),
    ]
    assert await store.expire_waiting(limit=10) == []  # once
    found = await store.stored_message("billing", "late")
    assert found is not None and found.deliveries == []
    assert found.wait is not None and found.wait.expired
    (receipt,) = await store.receipts("billing", "late")
    assert (receipt.event, receipt.delivery_id, receipt.chat_id) == ("message.failed", None, None)
    assert receipt.payload == {
        "chat_id": None,
        "recipient": "ann",
        "status": "failed",
        "attempts": 0,
        "telegram_message_id": None,
        "error": "the recipient did not link a chat before the message expired",
        "reason": "not_linked",
    }
    assert await store.receipts("billing", "quiet") == []  # no callback_url at accept
    # Replayed after it failed: answered from the store, nothing new.
    assert await accept(store, waiting("late", receipts=True)) == [Out.REPLAYED]
    assert await chats_of(store, "billing", "late") == []


async def test_retention_keeps_a_waiting_message_and_prunes_an_expired_one(
    store: Store,
) -> None:
    await accept(store, waiting("live"), waiting("gone", expires_after=EXPIRED))
    assert len(await store.expire_waiting(limit=10)) == 1
    assert deleted(await store.prune(Horizon(NONE_OLD, NONE_OLD), limit=500)) == {}
    counts = deleted(await store.prune(OLD, limit=500))
    assert counts == {Table.NOTIFICATIONS: 1, Table.PRODUCER_MESSAGES: 1}
    assert await store.stored_message("billing", "gone") is None
    found = await store.stored_message("billing", "live")
    assert found is not None and found.wait is not None and not found.wait.expired
