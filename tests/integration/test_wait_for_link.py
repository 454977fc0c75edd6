"""Waiting for the link end to end: `alertbridge serve` as a real process (PostgreSQL,
RabbitMQ, the bot polling the Telegram double). A message sent with
"wait_for_link": true before the user opens the producer's link arrives once they
press Start, exactly once, over HTTP and over the RabbitMQ ingress; one nobody links
for fails (not_linked), and the producer gets its signed receipt."""

from __future__ import annotations

from typing import Any

import httpx

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import config_dict, wait_until
from tests.integration.test_ingress import PRODUCERS, TOKEN, publish
from tests.integration.test_receipts import SECRET, ReceiptEndpoint
from tests.integration.test_recipients import ANN, auth, final, opened_link
from tests.processes import bridge_process

BODY = {"message_id": "welcome-1", "recipient": "user-42", "text": "Welcome aboard",
        "wait_for_link": True}  # fmt: skip
MARKER = {"message_id": "marker", "recipient": "user-42", "text": "the last one"}


async def status(client: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/messages/{message_id}", headers=auth())
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


def texts(telegram: TelegramDouble) -> list[str]:
    return [m.text for m in telegram.sent_messages(ANN)]


async def nothing_more_sent(client: httpx.AsyncClient, telegram: TelegramDouble) -> None:
    """A marker sent after whatever should have sent nothing: the producer's messages
    reach the chat in the order accepted, so once the marker is there anything stored
    before it was sent already. The waiting message must be there once."""
    assert (await client.post("/v1/messages", json=MARKER, headers=auth())).status_code == 202
    assert (await final(client, "marker"))["status"] == "delivered"
    assert texts(telegram).count("Welcome aboard") == 1
    assert texts(telegram)[-2:] == ["Welcome aboard", "the last one"]


async def test_a_message_posted_before_the_link_arrives_after_start_exactly_once(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    config = config_dict(
        database_url, amqp_names, telegram.url, bot={"updates": "polling"}, producers=PRODUCERS
    )
    async with (
        bridge_process(config, log_level="warning") as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
    ):
        accepted = await client.post("/v1/messages", json=BODY, headers=auth())
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "waiting" and accepted.json()["deliveries"] == []
        replayed = await client.post("/v1/messages", json=BODY, headers=auth())
        assert replayed.status_code == 200 and replayed.json()["status"] == "waiting"

        await opened_link(client, telegram, "user-42", ANN, token=TOKEN)
        record = await final(client, "welcome-1")
        assert record["status"] == "delivered"
        [delivery] = record["deliveries"]
        assert delivery["chat_id"] is None and delivery["recipient"] == "user-42"

        again = await client.post("/v1/messages", json=BODY, headers=auth())
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        await nothing_more_sent(client, telegram)


async def test_a_message_published_to_the_ingress_waits_for_the_link_too(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    config = config_dict(
        database_url, amqp_names, telegram.url, bot={"updates": "polling"}, producers=PRODUCERS
    )
    exchange = amqp_names["ingress_exchange"]
    async with (
        bridge_process(config, log_level="warning") as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
    ):
        await publish(exchange, BODY)

        async def stored() -> bool:
            answer = await client.get("/v1/messages/welcome-1", headers=auth())
            return answer.status_code == 200 and answer.json()["status"] == "waiting"

        await wait_until(stored)
        await publish(exchange, BODY)  # a replay while waiting: acked, nothing new
        await opened_link(client, telegram, "user-42", ANN, token=TOKEN)
        assert (await final(client, "welcome-1"))["status"] == "delivered"
        await publish(exchange, BODY)  # and after: the same
        await nothing_more_sent(client, telegram)


async def test_a_message_nobody_links_for_fails_not_linked_with_a_signed_receipt(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    endpoint = ReceiptEndpoint()
    await endpoint.up()
    producer = {"token": TOKEN, "callback_url": endpoint.url, "callback_secret": SECRET}
    config = config_dict(
        database_url,
        amqp_names,
        telegram.url,
        bot={"updates": "polling", "link_expiry": "1s"},
        producers={"billing": producer},
        receipts={"interval": "100ms", "backoff_initial": "100ms"},
    )
    try:
        async with (
            bridge_process(config, log_level="warning") as served,
            httpx.AsyncClient(base_url=served.url, timeout=10) as client,
        ):
            accepted = await client.post("/v1/messages", json=BODY, headers=auth())
            assert accepted.status_code == 202 and accepted.json()["status"] == "waiting"
            record = await final(client, "welcome-1")
            assert (record["status"], record["reason"], record["deliveries"]) == (
                "failed",
                "not_linked",
                [],
            )
            await wait_until(lambda: endpoint.taken())
            (receipt,) = endpoint.taken()
            assert receipt.signed
            fields = ("event", "producer", "message_id", "chat_id", "recipient", "reason")
            assert {k: receipt.json[k] for k in fields} == {
                "event": "message.failed",
                "producer": "billing",
                "message_id": "welcome-1",
                "chat_id": None,
                "recipient": "user-42",
                "reason": "not_linked",
            }
        assert texts(telegram) == []
    finally:
        await endpoint.close()
