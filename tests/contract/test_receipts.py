"""Producers' receipts in the store, both stores: every final transition of a producer's
message writes exactly one receipt row with it, whatever finished it; an alert's
delivery writes none; an operator's resend that ends again is a new event; the
outbox is claimed, sent and pruned alike."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from datetime import timedelta

from bridge.delivery import AmbiguityPolicy, DeliveryState, Reason, T, thread_change
from bridge.producers import message_key, producer_line
from bridge.receipts import ReceiptState, body, delivery_event_id
from bridge.retention import Horizon, Table
from bridge.store import NewDelivery, PostgresStore, Store, postgres, sqlite
from bridge.store.base import NewEvent, NewMessage
from bridge.store.sqlite import SqliteStore
from tests.contract.test_store import LATER, LEASE, accept, fail, send, store, to

__all__ = ["store"]  # the fixture, both stores

S = DeliveryState
GONE = timedelta(seconds=-1)  # a lease that ran out as it was taken
OLD = Horizon(finished=timedelta(seconds=-60), notifications=timedelta(seconds=-60))


def message(
    message_id: str, *chats: int, receipts: bool = True, recipient: str | None = None
) -> NewMessage:
    to_recipient = "" if recipient is None else f'"recipient":"{recipient}",'
    request = f'{{{to_recipient}"text":"{message_id}"}}'
    return NewMessage(
        key=message_key("billing", message_id),
        producer="billing",
        message_id=message_id,
        request_hash=hashlib.sha256(request.encode()).hexdigest(),
        request=request,
        deliveries=[NewDelivery(c, None, False, "", message_id) for c in chats],
        line=producer_line("billing"),
        receipts=receipts,
    )


async def one_delivery(store: Store, message_id: str, *, receipts: bool = True) -> int:
    (done,) = await store.accept_messages(
        [message(message_id, 42, receipts=receipts)], republish_after=LATER
    )
    (d,) = done.message.deliveries
    return d.id


async def delivered(store: Store, d: int, telegram_id: int) -> bool:
    return await store.mark_delivered(
        d, telegram_id, plain_text=False, reply_to=None, thread=thread_change(None, None, False)
    )


async def events(store: Store, message_id: str) -> list[tuple[str, str]]:
    return [(r.event, r.event_id) for r in await store.receipts("billing", message_id)]


async def test_a_message_to_a_recipient_is_reported_by_recipient_not_chat(store: Store) -> None:
    (done,) = await store.accept_messages(
        [message("export-1", 424242, recipient="user-42")], republish_after=LATER
    )
    (d,) = done.message.deliveries
    assert await send(store, d.id) is not None and await delivered(store, d.id, 9)
    (receipt,) = await store.receipts("billing", "export-1")
    # The chat is the user's own Telegram id: the producer knows its user by its id.
    assert receipt.chat_id is None and receipt.payload["recipient"] == "user-42"
    assert b'"chat_id":null' in body(receipt) and b"424242" not in body(receipt)


async def test_delivered_writes_one_receipt_with_what_telegram_answered(store: Store) -> None:
    d = await one_delivery(store, "inv-1")
    assert await send(store, d) is not None
    assert await store.receipts("billing", "inv-1") == []  # nothing final yet
    assert await delivered(store, d, 777)
    assert not await delivered(store, d, 777)  # a replay changes nothing

    (receipt,) = await store.receipts("billing", "inv-1")
    assert receipt.event == "message.delivered"
    assert (receipt.delivery_id, receipt.message_id, receipt.chat_id) == (d, "inv-1", 42)
    assert receipt.payload == {
        "recipient": None,
        "status": "delivered",
        "attempts": 1,
        "telegram_message_id": 777,
        "error": None,
        "reason": None,
    }
    assert receipt.state is ReceiptState.PENDING and receipt.attempts == 0
    # The SQL and the Python mirror agree, in both dialects.
    key = message_key("billing", "inv-1")
    assert receipt.event_id == delivery_event_id(key, d, 0, S.DELIVERED)


async def test_failed_writes_one_receipt_with_its_reason(store: Store) -> None:
    d = await one_delivery(store, "blocked")
    assert await send(store, d) is not None
    assert await fail(store, d, "Forbidden: bot was blocked by the user")
    assert not await fail(store, d, "again")

    (receipt,) = await store.receipts("billing", "blocked")
    assert receipt.event == "message.failed"
    assert receipt.payload["reason"] == Reason.FORBIDDEN.value
    assert receipt.payload["error"] == "Forbidden: bot was blocked by the user"


async def test_failed_after_the_last_attempt_writes_its_receipt(store: Store) -> None:
    d = await one_delivery(store, "exhausted")
    for _ in range(2):
        assert await send(store, d) is not None
        assert await store.apply(
            T.retry, d, reason=Reason.SERVER_ERROR, error="500", delay=timedelta(0)
        )
    assert await store.receipts("billing", "exhausted") == []  # a retry is not final
    assert await send(store, d) is not None
    assert await store.apply(T.failed, d, reason=Reason.ATTEMPTS_EXHAUSTED, error="500")
    (receipt,) = await store.receipts("billing", "exhausted")
    assert (receipt.event, receipt.payload["attempts"]) == ("message.failed", 3)
    assert receipt.payload["reason"] == "attempts_exhausted"


async def test_an_expired_lease_is_an_ambiguous_receipt(store: Store) -> None:
    d = await one_delivery(store, "lost")
    assert await store.claim(d, lease=GONE, begin=True) is not None  # written, then gone
    expired = await store.expire_leases(policy=AmbiguityPolicy.ASSUME_SENT)
    assert [e.delivery_id for e in expired] == [d]
    assert await store.expire_leases(policy=AmbiguityPolicy.ASSUME_SENT) == []

    (receipt,) = await store.receipts("billing", "lost")
    assert receipt.event == "message.ambiguous"
    assert receipt.payload["reason"] == Reason.LEASE_EXPIRED.value


async def test_resend_policy_writes_no_receipt_until_the_row_really_ends(store: Store) -> None:
    d = await one_delivery(store, "resent")
    assert await store.claim(d, lease=GONE, begin=True) is not None
    await store.expire_leases(policy=AmbiguityPolicy.RESEND)  # back to retry: not final
    assert await store.receipts("billing", "resent") == []
    assert await send(store, d) is not None and await delivered(store, d, 9)
    assert [e for e, _ in await events(store, "resent")] == ["message.delivered"]


async def test_ambiguous_then_a_late_answer_is_two_events(store: Store) -> None:
    d = await one_delivery(store, "late")
    assert await send(store, d) is not None
    assert await store.apply(T.ambiguous_assume_sent, d, reason=Reason.TIMEOUT, error="no answer")
    assert await delivered(store, d, 5)  # Telegram's answer arrived after all
    found = await events(store, "late")
    assert [e for e, _ in found] == ["message.ambiguous", "message.delivered"]
    assert len({i for _, i in found}) == 2


async def test_an_operator_resend_that_ends_again_is_a_new_event(store: Store) -> None:
    d = await one_delivery(store, "again")
    assert await send(store, d) is not None and await fail(store, d, "blocked")
    assert await store.apply(T.operator_resend, d, note="checked by ops")
    assert len(await events(store, "again")) == 1  # the resend itself is not final
    assert await send(store, d) is not None and await delivered(store, d, 11)

    (first, second) = await store.receipts("billing", "again")
    assert (first.event, second.event) == ("message.failed", "message.delivered")
    assert first.event_id != second.event_id
    assert second.event_id == delivery_event_id(message_key("billing", "again"), d, 1, "delivered")

    # Resent and failed again: the same state as the first end, yet a new event.
    assert await store.apply(T.operator_resend, d, note="x") is False  # delivered is final
    e = await one_delivery(store, "twice-failed")
    for _ in range(2):
        assert await send(store, e) is not None and await fail(store, e, "blocked")
        await store.apply(T.operator_resend, e, note="again")
    found = await events(store, "twice-failed")
    assert [name for name, _ in found] == ["message.failed", "message.failed"]
    assert found[0][1] != found[1][1]


async def test_alert_deliveries_and_producers_without_a_callback_write_none(
    store: Store,
) -> None:
    (alert,) = await accept(store, to(42))
    assert await send(store, alert) is not None and await fail(store, alert, "blocked")
    quiet = await one_delivery(store, "no-callback", receipts=False)
    assert await send(store, quiet) is not None and await delivered(store, quiet, 3)
    assert await store.receipts("billing", "no-callback") == []
    assert await store.pending_receipts() == 0


async def test_claims_take_each_receipt_once_and_record_it(store: Store) -> None:
    ids = []
    for i in range(3):
        d = await one_delivery(store, f"m{i}")
        assert await send(store, d) is not None and await delivered(store, d, i + 1)
        ids.append(d)
    assert await store.pending_receipts() == 3
    first = await store.claim_receipts(limit=2, lease=LEASE)
    second = await store.claim_receipts(limit=5, lease=LEASE)
    assert len(first) == 2 and len(second) == 1
    assert {r.id for r in first}.isdisjoint({r.id for r in second})
    assert await store.claim_receipts(limit=5, lease=LEASE) == []  # all under a lease
    assert all(r.attempts == 1 for r in first + second)

    sent, retried, given_up = first[0], first[1], second[0]
    assert await store.receipt_sent(sent.id)
    assert not await store.receipt_sent(sent.id)
    assert await store.receipt_not_taken(retried.id, 1, error="HTTP 500", retry_in=GONE)
    # A stale claim (attempt 1 of a row claimed again since) cannot push it back.
    (again,) = await store.claim_receipts(limit=5, lease=LEASE)
    assert (again.id, again.attempts, again.last_error) == (retried.id, 2, "HTTP 500")
    assert not await store.receipt_not_taken(retried.id, 1, error="late", retry_in=GONE)
    assert await store.receipt_not_taken(given_up.id, 1, error="refused", retry_in=None)
    assert await store.pending_receipts() == 1  # the one claimed again

    states = {
        r.message_id: r.state
        for m in ("m0", "m1", "m2")
        for r in await store.receipts("billing", m)
    }
    by_id = {sent.message_id: "sent", again.message_id: "pending", given_up.message_id: "gave_up"}
    assert {m: s.value for m, s in states.items()} == by_id


async def test_an_event_of_no_delivery_is_added_once(store: Store) -> None:
    event = NewEvent(
        event_id="link-1",
        event="recipient.linked",
        producer="billing",
        payload={"recipient": "user-7"},
        chat_id=4242,
    )
    assert await store.add_event(event)
    assert not await store.add_event(event)
    (claimed,) = await store.claim_receipts(limit=5, lease=LEASE)
    assert (claimed.event, claimed.delivery_id, claimed.chat_id) == ("recipient.linked", None, 4242)
    assert claimed.payload == {"recipient": "user-7"}


async def test_receipts_are_pruned_with_their_delivery_once_sent(store: Store) -> None:
    d = await one_delivery(store, "old")
    assert await send(store, d) is not None and await delivered(store, d, 1)
    await store.add_event(NewEvent("link-old", "recipient.linked", "billing", {}))

    # Still to be sent: the delivery, and so its receipt, is kept.
    kept = await store.prune(OLD, limit=500)
    assert kept[Table.DELIVERIES] == 0 and kept[Table.RECEIPTS] == 0
    for receipt in await store.claim_receipts(limit=5, lease=LEASE):
        assert await store.receipt_sent(receipt.id)

    counts = await store.prune(OLD, limit=500)

    assert counts[Table.RECEIPTS] == 2  # the delivery's and the event of no delivery
    assert counts[Table.DELIVERIES] == 1
    assert await store.receipts("billing", "old") == []
    assert await store.claim_receipts(limit=5, lease=LEASE) == []


async def test_a_receipt_given_up_lets_its_delivery_go(store: Store) -> None:
    d = await one_delivery(store, "unheard")
    assert await send(store, d) is not None and await fail(store, d, "blocked")
    (receipt,) = await store.claim_receipts(limit=5, lease=LEASE)
    assert await store.receipt_not_taken(receipt.id, 1, error="HTTP 500", retry_in=None)
    counts = await store.prune(OLD, limit=500)
    assert (counts[Table.DELIVERIES], counts[Table.RECEIPTS]) == (1, 1)


class Abandoned(Exception):
    pass


async def test_an_event_row_goes_with_the_transaction_it_was_written_in(store: Store) -> None:
    """What a store method that records an event with its cause uses: the row commits or
    rolls back with the rest."""
    event = NewEvent("link-2", "recipient.linked", "billing", {"recipient": "u"})
    with contextlib.suppress(Abandoned):
        if isinstance(store, PostgresStore):
            async with store.connection() as conn, conn.transaction():
                assert await postgres.insert_event_row(conn, event)
                raise Abandoned
        else:
            assert isinstance(store, SqliteStore)

            def abandoned(db: sqlite3.Connection, now: float) -> None:
                assert sqlite.insert_event_row(db, now, event)
                raise Abandoned

            await store._run(abandoned)
    assert await store.pending_receipts() == 0
    assert await store.add_event(event)
    assert await store.pending_receipts() == 1
