"""Recipients end to end: `alertbridge serve` as a real process (PostgreSQL, RabbitMQ,
the bot polling the Telegram double), a user who opens a producer's link and presses
Start, and messages addressed by the producer's own user id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import httpx
import pytest

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import config_dict, wait_until
from tests.integration.test_receipts import SECRET, ReceiptEndpoint
from tests.processes import bridge_process

BILLING, SHOP = "billing-secret-token", "shop-secret-token"
ANN = 424242  # a user, and their private chat with the bot (the same id)
BOB = 515151


def auth(token: str = BILLING) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> AsyncIterator[httpx.AsyncClient]:
    config = config_dict(
        database_url,
        amqp_names,
        telegram.url,
        bot={"updates": "polling"},
        producers={
            "billing": {"token": BILLING, "chats": [-1001]},
            "shop": {"token": SHOP},
        },
    )
    async with (
        bridge_process(config, log_level="warning") as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
    ):
        yield client


async def opened_link(
    client: httpx.AsyncClient, telegram: TelegramDouble, recipient: str, user: int,
    token: str = BILLING,
) -> str:  # fmt: skip
    """The producer asks for a link, the user opens it and presses Start: the bot's answer."""
    answer = await client.post(f"/v1/recipients/{recipient}/link", headers=auth(token))
    assert answer.status_code == 201, answer.text
    url = urlparse(answer.json()["link"])
    assert (url.netloc, url.path) == ("t.me", "/alertbridge_test_bot")  # the double's getMe
    [start] = parse_qs(url.query)["start"]
    return await said(telegram, user, f"/start {start}")


async def said(telegram: TelegramDouble, user: int, text: str) -> str:
    """``user`` writes ``text`` to the bot in their private chat: the bot's answer."""
    before = len(telegram.sent_messages(user))
    telegram.user_message(user, text, user_id=user, username=None)
    await wait_until(lambda: len(telegram.sent_messages(user)) > before)
    return telegram.sent_messages(user)[-1].text


async def final(client: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {}

    async def done() -> bool:
        answer = await client.get(f"/v1/messages/{message_id}", headers=auth())
        record.update(answer.json())
        return record.get("status") in ("delivered", "failed")

    await wait_until(done)
    return record


async def test_a_linked_user_gets_messages_by_recipient_id_until_stop(
    api: httpx.AsyncClient, telegram: TelegramDouble
) -> None:
    body = {"message_id": "export-1", "recipient": "user-42", "text": "Your export is ready"}
    refused = await api.post("/v1/messages", json=body, headers=auth())
    assert refused.status_code == 409
    assert "/v1/recipients/{recipient}/link" in refused.json()["error"]

    confirmation = await opened_link(api, telegram, "user-42", ANN)
    assert "billing" in confirmation and "/stop" in confirmation
    status = await api.get("/v1/recipients/user-42", headers=auth())
    assert status.json()["linked"] is True

    accepted = await api.post("/v1/messages", json=body, headers=auth())
    assert accepted.status_code == 202, accepted.text
    record = await final(api, "export-1")
    assert record["status"] == "delivered"
    assert [m.text for m in telegram.sent_messages(ANN)][-1] == "Your export is ready"

    assert "billing" in await said(telegram, ANN, "/stop")
    assert (await api.get("/v1/recipients/user-42", headers=auth())).json()["linked"] is False
    after = {**body, "message_id": "export-2"}
    assert (await api.post("/v1/messages", json=after, headers=auth())).status_code == 409


async def test_a_producer_cannot_address_or_read_another_producers_recipients(
    api: httpx.AsyncClient, telegram: TelegramDouble
) -> None:
    await opened_link(api, telegram, "user-42", BOB, token=SHOP)
    await opened_link(api, telegram, "user-43", ANN, token=BILLING)
    assert [c.method for c in telegram.calls].count("getMe") == 1  # asked once, remembered
    body = {"message_id": "m", "recipient": "user-42", "text": "hi"}
    assert (await api.post("/v1/messages", json=body, headers=auth(BILLING))).status_code == 409
    assert (await api.get("/v1/recipients/user-42", headers=auth(BILLING))).status_code == 404
    assert (await api.get("/v1/recipients/user-42", headers=auth(SHOP))).status_code == 200
    assert (await api.post("/v1/messages", json=body, headers=auth(SHOP))).status_code == 202
    # An id PostgreSQL's text cannot hold is refused before any query: 422, never a 500.
    for bad in ("a\x00b", "\ud800"):  # sent as JSON escapes: \u0000, \ud800
        raw = json.dumps({"message_id": "n", "recipient": bad, "text": "hi"})
        answer = await api.post("/v1/messages", content=raw, headers=auth(SHOP))
        assert answer.status_code == 422, answer.text


async def test_a_user_who_blocked_the_bot_makes_the_delivery_fail_forbidden(
    api: httpx.AsyncClient, telegram: TelegramDouble, database_url: str
) -> None:
    await opened_link(api, telegram, "user-42", ANN)
    telegram.block_chat(ANN)
    body = {"message_id": "blocked-1", "recipient": "user-42", "text": "hello?"}
    assert (await api.post("/v1/messages", json=body, headers=auth())).status_code == 202
    record = await final(api, "blocked-1")
    assert record["status"] == "failed"
    [delivery] = record["deliveries"]
    assert "blocked by the user" in delivery["error"] and delivery["attempts"] == 1
    connection = await asyncpg.connect(database_url)
    try:
        reason = await connection.fetchval("SELECT reason FROM deliveries")
    finally:
        await connection.close()
    assert reason == "forbidden"


async def test_the_producer_hears_of_the_link_and_of_the_message_by_recipient(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    endpoint = ReceiptEndpoint()
    await endpoint.up()
    config = config_dict(
        database_url,
        amqp_names,
        telegram.url,
        bot={"updates": "polling"},
        producers={
            "billing": {"token": BILLING, "callback_url": endpoint.url, "callback_secret": SECRET}
        },
        receipts={"interval": "100ms", "backoff_initial": "100ms"},
    )
    try:
        async with (
            bridge_process(config, log_level="warning") as served,
            httpx.AsyncClient(base_url=served.url, timeout=10) as client,
        ):
            await opened_link(client, telegram, "user-42", ANN)
            await wait_until(lambda: endpoint.taken())
            (linked,) = endpoint.taken()
            assert linked.signed
            assert {k: linked.json[k] for k in ("event", "producer", "recipient")} == {
                "event": "recipient.linked",
                "producer": "billing",
                "recipient": "user-42",
            }
            body = {"message_id": "export-1", "recipient": "user-42", "text": "ready"}
            assert (await client.post("/v1/messages", json=body, headers=auth())).status_code == 202
            await wait_until(lambda: len(endpoint.taken()) == 2)
            delivered = endpoint.taken()[1].json
            assert (delivered["event"], delivered["recipient"]) == ("message.delivered", "user-42")
            assert (
                delivered["chat_id"] is None and str(ANN) not in endpoint.taken()[1].body.decode()
            )
    finally:
        await endpoint.close()
