"""Waiting for the link ("wait_for_link": true) without services: the request's
canonical form, the message's status, and the whole path over the SQLite store on a
fake clock: accepted to wait (202, waiting), given its delivery by /start, replayed
before and after, or failed (not_linked) by the scheduler once expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bridge.config import Config
from bridge.delivery import DeliveryState
from bridge.errors import PayloadError
from bridge.metrics import Metrics
from bridge.producers import WAITING, message_json, message_status, parse_message
from bridge.receiver import ReceiverDeps, Rules, create_app
from bridge.scheduler import Scheduler
from bridge.store.base import MessageDelivery, MessageWait, StoredMessage
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import FakeClock, FakePublisher
from tests.unit.test_recipients import (
    ANN_CHAT,
    EXPIRY,
    Chats,
    a_link,
    api,
    auth,
    chats,
    in_force,
    links,
    metrics,
    telegram,
)

__all__ = ["api", "chats", "in_force", "metrics", "telegram"]  # fixtures

BODY = {"message_id": "m1", "recipient": "user-42", "text": "Your export is ready",
        "wait_for_link": True}  # fmt: skip
MOMENT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


# -- the request ---------------------------------------------------------------------


def test_wait_for_link_is_in_the_canonical_request_only_when_true() -> None:
    plain = {"message_id": "m", "recipient": "u", "text": "hi"}
    without = parse_message(plain)
    # Every request stored before wait_for_link existed keeps its hash: still a replay.
    assert parse_message({**plain, "wait_for_link": False}).request_hash == without.request_hash
    assert "wait_for_link" not in without.canonical and not without.wait_for_link
    waiting = parse_message({**plain, "wait_for_link": True})
    assert waiting.canonical["wait_for_link"] is True and waiting.wait_for_link
    assert waiting.request_hash != without.request_hash


@pytest.mark.parametrize(
    "body",
    [
        {"chat_id": 5, "text": "hi", "wait_for_link": True},
        {"labels": {"a": "b"}, "text": "hi", "wait_for_link": True},
        {"recipient": "u", "text": "hi", "wait_for_link": "yes"},
        {"recipient": "u", "text": "hi", "wait_for_link": 1},
    ],
)
def test_wait_for_link_goes_with_a_recipient_and_is_true_or_false(body: dict[str, object]) -> None:
    with pytest.raises(PayloadError) as refused:
        parse_message({"message_id": "m", **body})
    assert refused.value.status == 422 and refused.value.field == "wait_for_link"


# -- the status ----------------------------------------------------------------------


def delivery(state: DeliveryState) -> MessageDelivery:
    return MessageDelivery(1, 5, state, 0, None, None, None, None, False)


def test_a_waiting_message_is_waiting_then_failed_and_its_deliveries_decide_once_made() -> None:
    live, expired = MessageWait("u", MOMENT, False), MessageWait("u", MOMENT, True)
    assert message_status([], live) == WAITING == "waiting"
    assert message_status([], expired) == DeliveryState.FAILED
    assert message_status([delivery(DeliveryState.QUEUED)], None) == DeliveryState.QUEUED
    assert message_status([], None) == DeliveryState.DELIVERED  # nothing was to be sent


def test_a_waiting_message_reads_with_no_delivery_and_says_until_when_and_why() -> None:
    def stored(wait: MessageWait) -> StoredMessage:
        return StoredMessage("m", MOMENT, "h", '{"recipient":"u"}', [], wait)

    waiting = message_json(stored(MessageWait("u", MOMENT, False)))
    assert waiting == {"message_id": "m", "status": "waiting", "created_at": MOMENT.isoformat(),
                       "deliveries": [], "wait_until": MOMENT.isoformat()}  # fmt: skip
    failed = message_json(stored(MessageWait("u", MOMENT, True)))
    assert failed["status"] == "failed" and failed["reason"] == "not_linked"
    assert failed["deliveries"] == [] and "did not link" in failed["error"]


# -- the whole path ------------------------------------------------------------------


def now(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.time(), UTC)


async def test_a_message_waits_for_the_link_then_goes_to_the_chat_once(
    api: httpx.AsyncClient, chats: Chats, store: SqliteStore, metrics: Metrics, clock: FakeClock
) -> None:
    token = await a_link(store, "user-42")
    accepted = await api.post("/v1/messages", json=BODY, headers=auth())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "waiting" and accepted.json()["deliveries"] == []
    assert accepted.json()["wait_until"] == (now(clock) + EXPIRY).isoformat()
    assert links(metrics, "billing", "waiting_message") == 1
    assert links(metrics, "billing", "unlinked_message") == 0
    replayed = await api.post("/v1/messages", json=BODY, headers=auth())
    assert replayed.status_code == 200 and replayed.json()["status"] == "waiting"
    # The request without wait_for_link is another request: a conflict, named.
    plain = {k: v for k, v in BODY.items() if k != "wait_for_link"}
    changed = await api.post("/v1/messages", json=plain, headers=auth())
    assert changed.status_code == 422 and changed.json()["differs"] == ["wait_for_link"]

    await chats.say(ANN_CHAT, f"/start {token}")
    assert links(metrics, "billing", "released_message") == 1
    # Due for the scheduler now: the bot publishes nothing itself.
    [(delivery_id, chat)] = await store.take_due(limit=10, republish_after=timedelta(seconds=30))
    assert chat == ANN_CHAT
    read = (await api.get("/v1/messages/m1", headers=auth())).json()
    assert read["status"] == "queued" and "wait_until" not in read
    [shown] = read["deliveries"]
    assert shown["chat_id"] is None and shown["recipient"] == "user-42"

    again = await api.post("/v1/messages", json=BODY, headers=auth())
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    [row] = (await store.stored_message("billing", "m1")).deliveries  # type: ignore[union-attr]
    assert row.id == delivery_id  # nothing more was stored


async def test_a_waiting_batch_is_released_in_the_order_accepted(
    api: httpx.AsyncClient, chats: Chats, store: SqliteStore
) -> None:
    token = await a_link(store, "user-42")
    messages = [{**BODY, "message_id": f"m{i}", "text": f"step {i}"} for i in range(3)]
    answer = await api.post("/v1/messages/batch", json={"messages": messages}, headers=auth())
    assert [(r["code"], r["status"]) for r in answer.json()["results"]] == [(202, "waiting")] * 3
    await chats.say(ANN_CHAT, f"/start {token}")
    ids = []
    for i in range(3):
        stored = await store.stored_message("billing", f"m{i}")
        assert stored is not None
        ids += [d.id for d in stored.deliveries]
    assert len(ids) == 3 and ids == sorted(ids)


async def test_an_unlinked_recipient_s_waiting_message_fails_not_linked_after_the_expiry(
    api: httpx.AsyncClient,
    chats: Chats,
    store: SqliteStore,
    metrics: Metrics,
    clock: FakeClock,
    in_force: Config,
) -> None:
    publisher = FakePublisher()
    scheduler = Scheduler(store, publisher, lambda: in_force, metrics, clock)
    assert (await api.post("/v1/messages", json=BODY, headers=auth())).status_code == 202
    clock.advance(EXPIRY.total_seconds() - 1)
    await scheduler.tick()
    assert (await api.get("/v1/messages/m1", headers=auth())).json()["status"] == "waiting"
    clock.advance(1)
    await scheduler.tick()
    read = (await api.get("/v1/messages/m1", headers=auth())).json()
    assert (read["status"], read["reason"], read["deliveries"]) == ("failed", "not_linked", [])
    assert links(metrics, "billing", "expired_message") == 1
    # A link opened now sends nothing of it; a replay answers from the store.
    await chats.say(ANN_CHAT, f"/start {await a_link(store, 'user-42')}")
    assert links(metrics, "billing", "released_message") == 0
    replayed = await api.post("/v1/messages", json=BODY, headers=auth())
    assert replayed.status_code == 200 and replayed.json()["status"] == "failed"
    assert publisher.published == []


async def test_without_a_bot_nothing_can_link_so_nothing_waits(
    store: SqliteStore, metrics: Metrics, in_force: Config
) -> None:
    settings = in_force.model_copy(update={"bot": None})
    deps = ReceiverDeps(Rules.from_config(settings), store, FakePublisher(), metrics)
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
        refused = await client.post("/v1/messages", json=BODY, headers=auth())
    assert refused.status_code == 409 and "no bot" in refused.json()["error"]
    assert await store.stored_message("billing", "m1") is None
