"""Recipients without services: the token's shape, the bot's /start TOKEN and /stop
against the SQLite store on a fake clock, and the producer API's recipient routes
and destination over the same store (httpx's ASGI transport, no sockets)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from aiogram import Bot
from aiogram.types import Update

from bridge.alertmanager_api import AlertmanagerClient
from bridge.bot.commands import BotHandler
from bridge.config import BotConfig, Config, ProducerConfig
from bridge.errors import PayloadError, TelegramUnavailable
from bridge.metrics import Metrics
from bridge.producer_api import named_recipients
from bridge.producers import authorize, parse_message
from bridge.receiver import ReceiverDeps, Rules, create_app
from bridge.recipients import (
    START_PARAMETER,
    check_recipient,
    new_token,
    start_token,
    token_hash,
)
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import FakeBotSession, FakeClock, FakePublisher, config

ANN_CHAT, BOB_CHAT, GROUP = 7001, 7002, -1001
BILLING, SHOP = "billing-token", "shop-token"
PRODUCERS = {
    "billing": ProducerConfig(token=BILLING, chats=[GROUP]),
    "shop": ProducerConfig(token=SHOP),
}
EXPIRY = timedelta(hours=24)


# -- the token ----------------------------------------------------------------------


def test_a_token_is_a_valid_telegram_start_parameter_and_never_repeats() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert START_PARAMETER.fullmatch(token), token
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,64}", token), token  # Telegram's own rule
        assert start_token(f"  {token} ") == token


def test_start_arguments_that_cannot_be_a_token_are_plain_start() -> None:
    for args in ("", " ", "a b", "x" * 65, "tok/en", "töken", "tok=en"):
        assert start_token(args) is None, args


def test_the_stored_hash_is_not_the_token() -> None:
    token = new_token()
    assert token_hash(token) != token and len(token_hash(token)) == 64
    assert token_hash(token) == token_hash(token)


@pytest.mark.parametrize("bad", ["", "x" * 201, "a\x00b", "line\nbreak", "\ud800", 5, None])
def test_a_recipient_id_is_1_to_200_printable_characters(bad: object) -> None:
    with pytest.raises(PayloadError) as refused:
        check_recipient(bad)
    assert refused.value.status == 422 and refused.value.field == "recipient"


def test_a_recipient_destination_is_kept_as_the_recipient_and_always_allowed() -> None:
    request = parse_message({"message_id": "m", "recipient": "user-42", "text": "hi"})
    assert request.canonical["recipient"] == "user-42" and "chats" not in request.canonical
    assert request.recipient == "user-42"
    authorize(ProducerConfig(token="t"), request)  # no chats, no routes: still its own users
    assert check_recipient("x" * 200) == "x" * 200


# -- the bot ------------------------------------------------------------------------


class Chats:
    """Updates from people, as Telegram sends them, to the handler."""

    def __init__(self, handler: BotHandler, bot: Bot) -> None:
        self.handler, self.bot, self.n = handler, bot, 0

    async def say(self, chat_id: int, text: str) -> None:
        self.n += 1
        chat: dict[str, Any] = {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
        if chat_id < 0:
            chat["title"] = "ops"
        user = {"id": abs(chat_id), "is_bot": False, "first_name": "Ann"}
        update = Update.model_validate(
            {
                "update_id": self.n,
                "message": {"message_id": self.n, "date": 0, "chat": chat, "from": user,
                            "text": text},
            },
            context={"bot": self.bot},
        )  # fmt: skip
        await self.handler.handle(update)


@pytest.fixture
def telegram() -> FakeBotSession:
    return FakeBotSession()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def in_force() -> Config:
    return config().model_copy(
        update={"bot": BotConfig(link_expiry=EXPIRY), "producers": PRODUCERS}
    )


@pytest.fixture
def chats(
    store: SqliteStore, telegram: FakeBotSession, metrics: Metrics, in_force: Config
) -> Chats:
    bot = Bot("123:ABC", session=telegram)
    handler = BotHandler(
        bot,
        store.interactions(),
        lambda _: cast(AlertmanagerClient, None),
        lambda: in_force,
        metrics,
    )
    return Chats(handler, bot)


def said(telegram: FakeBotSession, chat_id: int) -> list[str]:
    return [str(m.text) for m in telegram.sent(chat_id)]


def links(metrics: Metrics, producer: str, event: str) -> float:
    value = metrics.registry.get_sample_value(
        "alertbridge_recipient_links_total", {"producer": producer, "event": event}
    )
    return 0.0 if value is None else value


async def a_link(store: SqliteStore, recipient: str, producer: str = "billing") -> str:
    token = new_token()
    await store.create_link(producer, recipient, token_hash(token), ttl=EXPIRY)
    return token


async def test_start_with_a_token_links_the_chat_once_and_names_the_producer(
    store: SqliteStore, chats: Chats, telegram: FakeBotSession, metrics: Metrics
) -> None:
    token = await a_link(store, "user-42")
    await chats.say(ANN_CHAT, f"/start {token}")
    assert await store.recipient_chats("billing", ["user-42"]) == {"user-42": ANN_CHAT}
    [confirmation] = said(telegram, ANN_CHAT)
    assert "<b>billing</b>" in confirmation and "/stop" in confirmation
    assert links(metrics, "billing", "linked") == 1

    await chats.say(BOB_CHAT, f"/start {token}")  # the link forwarded, or opened twice
    assert said(telegram, BOB_CHAT) == [
        "This link was already used or has expired. Ask for a new one where you got it."
    ]
    assert await store.recipient_chats("billing", ["user-42"]) == {"user-42": ANN_CHAT}
    assert links(metrics, "", "refused") == 1


async def test_an_expired_link_is_refused(
    store: SqliteStore, chats: Chats, telegram: FakeBotSession, clock: FakeClock
) -> None:
    token = await a_link(store, "user-42")
    clock.advance(EXPIRY.total_seconds() + 1)
    await chats.say(ANN_CHAT, f"/start {token}")
    assert said(telegram, ANN_CHAT) == [
        "This link was already used or has expired. Ask for a new one where you got it."
    ]
    assert await store.recipient_chats("billing", ["user-42"]) == {}


async def test_a_link_just_before_it_expires_still_links(
    store: SqliteStore, chats: Chats, clock: FakeClock
) -> None:
    token = await a_link(store, "user-42")
    clock.advance(EXPIRY.total_seconds() - 1)
    await chats.say(ANN_CHAT, f"/start {token}")
    assert await store.recipient_chats("billing", ["user-42"]) == {"user-42": ANN_CHAT}


async def test_plain_start_is_help_and_links_nothing(
    store: SqliteStore, chats: Chats, telegram: FakeBotSession
) -> None:
    await a_link(store, "user-42")
    await chats.say(ANN_CHAT, "/start")
    [help_text] = said(telegram, ANN_CHAT)
    assert "/chatid" in help_text
    assert await store.recipient_chats("billing", ["user-42"]) == {}


async def test_a_link_opened_in_a_group_links_nothing_and_stays_usable(
    store: SqliteStore, chats: Chats, telegram: FakeBotSession
) -> None:
    token = await a_link(store, "user-42")
    await chats.say(GROUP, f"/start {token}")
    assert said(telegram, GROUP) == ["Open the link in a private chat with the bot."]
    await chats.say(ANN_CHAT, f"/start {token}")
    assert await store.recipient_chats("billing", ["user-42"]) == {"user-42": ANN_CHAT}


async def test_stop_unlinks_every_recipient_of_the_chat(
    store: SqliteStore, chats: Chats, telegram: FakeBotSession, metrics: Metrics
) -> None:
    await chats.say(ANN_CHAT, f"/start {await a_link(store, 'user-42')}")
    await chats.say(ANN_CHAT, f"/start {await a_link(store, 'ann', 'shop')}")
    await chats.say(BOB_CHAT, f"/start {await a_link(store, 'user-43')}")

    await chats.say(ANN_CHAT, "/stop")
    assert said(telegram, ANN_CHAT)[-1] == (
        "Stopped: no more messages from <b>billing</b>, <b>shop</b> in this chat."
    )
    assert await store.recipient_chats("billing", ["user-42", "user-43"]) == {"user-43": BOB_CHAT}
    assert await store.recipient_chats("shop", ["ann"]) == {}
    assert links(metrics, "billing", "unlinked") == links(metrics, "shop", "unlinked") == 1

    await chats.say(ANN_CHAT, "/stop")
    assert said(telegram, ANN_CHAT)[-1] == "Nothing is linked to this chat."
    await chats.say(GROUP, "/stop")  # a group's /stop is another bot's business
    assert said(telegram, GROUP) == []


# -- the producer API ---------------------------------------------------------------


async def _username() -> str:
    return "alertbridge_test_bot"


@pytest.fixture
async def api(
    store: SqliteStore, metrics: Metrics, in_force: Config
) -> AsyncIterator[httpx.AsyncClient]:
    deps = ReceiverDeps(
        rules=Rules.from_config(in_force),
        store=store,
        publisher=FakePublisher(),
        metrics=metrics,
        bot_username=_username,
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        yield client


def auth(token: str = BILLING) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_link_is_a_deep_link_to_the_bot_with_a_usable_token(
    api: httpx.AsyncClient, chats: Chats, store: SqliteStore, clock: FakeClock
) -> None:
    answer = await api.post("/v1/recipients/user-42/link", headers=auth())
    assert answer.status_code == 201
    body = answer.json()
    assert body["recipient"] == "user-42"
    url = urlparse(body["link"])
    assert (url.scheme, url.netloc, url.path) == ("https", "t.me", "/alertbridge_test_bot")
    [token] = parse_qs(url.query)["start"]
    assert START_PARAMETER.fullmatch(token)
    assert body["expires_at"] == (clock_now(clock) + EXPIRY).isoformat()

    status = await api.get("/v1/recipients/user-42", headers=auth())
    assert status.json() == {"recipient": "user-42", "linked": False, "linked_at": None}
    await chats.say(ANN_CHAT, f"/start {token}")
    status = await api.get("/v1/recipients/user-42", headers=auth())
    assert status.json()["linked"] and status.json()["linked_at"] is not None
    assert "chat_id" not in status.json()


async def test_logs_name_the_producer_and_recipient_never_the_token(
    api: httpx.AsyncClient, chats: Chats, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await api.post("/v1/recipients/user-42/link", headers=auth())
    [token] = parse_qs(urlparse(answer.json()["link"]).query)["start"]
    await chats.say(ANN_CHAT, f"/start {token}")
    await chats.say(ANN_CHAT, f"/start {token}")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "'user-42' of producer billing linked to chat 7001" in logged
    assert "producer billing: link created for recipient 'user-42'" in logged
    assert token not in logged and token_hash(token) not in logged
    assert links(metrics, "billing", "created") == 1


def clock_now(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.time(), UTC)


async def test_a_message_to_a_recipient_goes_to_its_chat_or_gets_409(
    api: httpx.AsyncClient, chats: Chats, store: SqliteStore, metrics: Metrics
) -> None:
    body = {"message_id": "m1", "recipient": "user-42", "text": "Your export is ready"}
    refused = await api.post("/v1/messages", json=body, headers=auth())
    assert refused.status_code == 409
    assert "POST /v1/recipients/{recipient}/link" in refused.json()["error"]
    assert refused.json()["field"] == "recipient"
    assert links(metrics, "billing", "unlinked_message") == 1

    await chats.say(ANN_CHAT, f"/start {await a_link(store, 'user-42')}")
    accepted = await api.post("/v1/messages", json=body, headers=auth())
    assert accepted.status_code == 202
    [delivery] = accepted.json()["deliveries"]
    assert delivery["recipient"] == "user-42" and delivery["chat_id"] is None
    [row] = (await store.stored_message("billing", "m1")).deliveries  # type: ignore[union-attr]
    assert row.chat_id == ANN_CHAT

    # Re-linked to another chat, then unlinked: the same request is still a replay,
    # answered from the store; nothing new is stored or sent.
    await chats.say(BOB_CHAT, f"/start {await a_link(store, 'user-42')}")
    again = await api.post("/v1/messages", json=body, headers=auth())
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    await chats.say(BOB_CHAT, "/stop")
    again = await api.post("/v1/messages", json=body, headers=auth())
    assert again.status_code == 200
    changed = await api.post("/v1/messages", json={**body, "text": "other"}, headers=auth())
    assert changed.status_code == 422 and changed.json()["differs"] == ["text"]
    [row] = (await store.stored_message("billing", "m1")).deliveries  # type: ignore[union-attr]
    assert row.chat_id == ANN_CHAT

    # A new message goes where the recipient is linked now.
    await chats.say(BOB_CHAT, f"/start {await a_link(store, 'user-42')}")
    new = await api.post("/v1/messages", json={**body, "message_id": "m2"}, headers=auth())
    assert new.status_code == 202
    [row] = (await store.stored_message("billing", "m2")).deliveries  # type: ignore[union-attr]
    assert row.chat_id == BOB_CHAT


async def test_a_batch_resolves_each_recipient(
    api: httpx.AsyncClient, chats: Chats, store: SqliteStore
) -> None:
    await chats.say(ANN_CHAT, f"/start {await a_link(store, 'user-42')}")
    messages = [
        {"message_id": "a", "recipient": "user-42", "text": "a"},
        {"message_id": "b", "recipient": "user-43", "text": "b"},
    ]
    answer = await api.post("/v1/messages/batch", json={"messages": messages}, headers=auth())
    assert [r["code"] for r in answer.json()["results"]] == [202, 409]


async def test_a_producer_cannot_reach_another_producers_recipients(
    api: httpx.AsyncClient, chats: Chats, store: SqliteStore
) -> None:
    await chats.say(ANN_CHAT, f"/start {await a_link(store, 'user-42', 'shop')}")
    body = {"message_id": "m1", "recipient": "user-42", "text": "hi"}
    assert (await api.post("/v1/messages", json=body, headers=auth(BILLING))).status_code == 409
    assert (await api.get("/v1/recipients/user-42", headers=auth(BILLING))).status_code == 404
    assert (await api.get("/v1/recipients/user-42", headers=auth(SHOP))).status_code == 200
    assert (await api.post("/v1/messages", json=body, headers=auth(SHOP))).status_code == 202


async def test_links_need_the_bot_and_a_valid_recipient(
    store: SqliteStore, metrics: Metrics, in_force: Config
) -> None:
    async def no_telegram() -> str:
        raise TelegramUnavailable("getMe failed")

    cases: list[tuple[Config, Any, int]] = [
        (in_force.model_copy(update={"bot": None}), _username, 409),
        (in_force, None, 409),  # a bot section added by a reload: not running until restart
        (in_force, no_telegram, 503),
    ]
    for settings, username, status in cases:
        deps = ReceiverDeps(Rules.from_config(settings), store, FakePublisher(), metrics,
                            bot_username=username)  # fmt: skip
        transport = httpx.ASGITransport(app=create_app(deps))
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
            answer = await client.post("/v1/recipients/u/link", headers=auth())
            assert answer.status_code == status, answer.text
            if status == 409:
                assert "bot:" in answer.json()["error"]
            refused = await client.post(f"/v1/recipients/{'x' * 201}/link", headers=auth())
            assert refused.status_code == 422
            assert (await client.post("/v1/recipients/u/link")).status_code == 401
    assert await store.recipient("billing", "u") is None  # nothing stored on the way


def test_only_valid_recipient_ids_are_looked_up() -> None:
    bodies: list[object] = [
        {"recipient": "a"},
        {"recipient": "a\x00b"},
        {"recipient": "\ud800"},
        {"recipient": 7},
        {"recipient": "b"},
        {"recipient": "a"},
        [],
    ]
    assert named_recipients(bodies) == ["a", "b"]
