"""Recipients in the store: a link token is used once, links (producer, recipient) to
a chat, /stop unlinks by chat, and messages resolve recipients to chats. Both stores.

The stores read their own clocks, so a link's expiry is given as a duration
(negative: already expired) and horizons stand in for time, as in test_retention.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bridge.recipients import new_token, token_hash
from bridge.retention import Horizon, Table
from bridge.store import Store
from bridge.store.base import linked_event
from tests.contract.test_retention import NONE_OLD, OLD, deleted
from tests.contract.test_store import store

__all__ = ["store"]  # the fixture, both stores

DAY = timedelta(days=1)
EXPIRED = timedelta(seconds=-1)
ANN_CHAT, ANN_NEW_CHAT, BOB_CHAT = 501, 502, 601


async def link(store: Store, recipient: str, *, producer: str = "billing",
               ttl: timedelta = DAY) -> str:  # fmt: skip
    token = new_token()
    await store.create_link(producer, recipient, token_hash(token), ttl=ttl)
    return token


async def use(store: Store, token: str, chat_id: int) -> bool:
    return await store.interactions().consume_link(token_hash(token), chat_id) is not None


async def test_a_link_used_links_the_recipient_to_the_chat_once(store: Store) -> None:
    assert await store.recipient("billing", "ann") is None
    token = await link(store, "ann")
    pending = await store.recipient("billing", "ann")
    assert pending is not None and not pending.linked and pending.linked_at is None
    assert await store.recipient_chats("billing", ["ann"]) == {}

    linked = await store.interactions().consume_link(token_hash(token), ANN_CHAT)
    assert linked is not None
    assert (linked.producer, linked.recipient, linked.chat_id) == ("billing", "ann", ANN_CHAT)
    assert linked.replaced_chat_id is None and linked.linked_at.tzinfo is not None
    state = await store.recipient("billing", "ann")
    assert state is not None and state.linked and state.linked_at == linked.linked_at
    assert await store.recipient_chats("billing", ["ann", "nobody"]) == {"ann": ANN_CHAT}

    assert not await use(store, token, BOB_CHAT)  # one time only
    assert await store.recipient_chats("billing", ["ann"]) == {"ann": ANN_CHAT}


async def test_a_token_is_looked_up_by_its_hash_only(store: Store) -> None:
    token = await link(store, "ann")
    assert await store.interactions().consume_link(token, ANN_CHAT) is None
    assert await use(store, token, ANN_CHAT)


async def test_an_expired_link_links_nobody(store: Store) -> None:
    token = await link(store, "ann", ttl=EXPIRED)
    assert not await use(store, token, ANN_CHAT)
    state = await store.recipient("billing", "ann")
    assert state is not None and not state.linked


async def test_a_token_used_twice_at_once_links_once(store: Store) -> None:
    token = await link(store, "ann")
    results = await asyncio.gather(
        *(store.interactions().consume_link(token_hash(token), chat) for chat in (501, 502, 503))
    )
    (winner,) = [r for r in results if r is not None]
    assert await store.recipient_chats("billing", ["ann"]) == {"ann": winner.chat_id}


async def test_relinking_moves_the_recipient_to_the_new_chat(store: Store) -> None:
    assert await use(store, await link(store, "ann"), ANN_CHAT)
    again = await store.interactions().consume_link(
        token_hash(await link(store, "ann")), ANN_NEW_CHAT
    )
    assert again is not None and again.replaced_chat_id == ANN_CHAT
    assert await store.recipient_chats("billing", ["ann"]) == {"ann": ANN_NEW_CHAT}
    # The same chat again replaces nothing.
    same = await store.interactions().consume_link(
        token_hash(await link(store, "ann")), ANN_NEW_CHAT
    )
    assert same is not None and same.replaced_chat_id is None


async def test_recipients_are_each_producers_own(store: Store) -> None:
    assert await use(store, await link(store, "u1", producer="billing"), ANN_CHAT)
    assert await use(store, await link(store, "u1", producer="shop"), BOB_CHAT)
    assert await store.recipient_chats("billing", ["u1"]) == {"u1": ANN_CHAT}
    assert await store.recipient_chats("shop", ["u1"]) == {"u1": BOB_CHAT}
    assert await store.recipient("other", "u1") is None


async def test_stop_unlinks_every_recipient_of_the_chat_and_only_them(store: Store) -> None:
    assert await use(store, await link(store, "ann", producer="billing"), ANN_CHAT)
    assert await use(store, await link(store, "ann-shop", producer="shop"), ANN_CHAT)
    assert await use(store, await link(store, "bob"), BOB_CHAT)

    unlinked = await store.interactions().unlink_chat(ANN_CHAT)
    assert [(s.producer, s.recipient, s.chat_id) for s in unlinked] == [
        ("billing", "ann", ANN_CHAT),
        ("shop", "ann-shop", ANN_CHAT),
    ]
    assert await store.recipient_chats("billing", ["ann", "bob"]) == {"bob": BOB_CHAT}
    assert await store.recipient_chats("shop", ["ann-shop"]) == {}
    state = await store.recipient("billing", "ann")
    assert state is not None and not state.linked and state.linked_at is None
    assert await store.interactions().unlink_chat(ANN_CHAT) == []


async def test_prune_deletes_expired_tokens_and_stale_unlinked_recipients(store: Store) -> None:
    await link(store, "stale", ttl=EXPIRED)
    await link(store, "waiting", ttl=DAY)
    assert await use(store, await link(store, "linked"), ANN_CHAT)
    # A horizon nothing is older than: only the expired token goes.
    counts = await store.prune(Horizon(finished=NONE_OLD, notifications=NONE_OLD), limit=500)
    assert deleted(counts) == {Table.RECIPIENT_LINKS: 1}
    # Everything old: the unlinked recipient with no token pending goes; the one
    # whose link is still pending, and the linked one, stay.
    assert deleted(await store.prune(OLD, limit=500)) == {Table.RECIPIENTS: 1}
    assert await store.recipient("billing", "stale") is None
    assert await store.recipient("billing", "waiting") is not None
    assert await store.recipient_chats("billing", ["linked"]) == {"linked": ANN_CHAT}


async def test_a_link_writes_its_receipt_with_it_for_a_producer_that_wants_receipts(
    store: Store,
) -> None:
    lease = timedelta(seconds=30)
    quiet = await link(store, "ann", producer="shop")
    assert await store.interactions().consume_link(
        token_hash(quiet), ANN_CHAT, receipts_for={"billing"}
    )
    assert await store.claim_receipts(limit=5, lease=lease) == []  # shop wants none

    token = await link(store, "ann")
    linked = await store.interactions().consume_link(
        token_hash(token), ANN_CHAT, receipts_for={"billing"}
    )
    assert linked is not None
    (receipt,) = await store.claim_receipts(limit=5, lease=lease)
    assert (receipt.event, receipt.producer, receipt.delivery_id) == (
        "recipient.linked",
        "billing",
        None,
    )
    assert receipt.event_id == linked_event(linked).event_id
    # The producer reads its own id back, never the chat (a user's Telegram id).
    assert receipt.chat_id is None and receipt.payload["recipient"] == "ann"

    relinked = await link(store, "ann")
    assert await store.interactions().consume_link(
        token_hash(relinked), ANN_NEW_CHAT, receipts_for={"billing"}
    )
    (again,) = await store.claim_receipts(limit=5, lease=lease)
    assert again.event_id != receipt.event_id  # a re-link is an event of its own
