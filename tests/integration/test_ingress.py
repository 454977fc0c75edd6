"""The RabbitMQ ingress end to end: messages published to the real broker, stored in
the real PostgreSQL, delivered to the strict Telegram double; and what is refused
set aside in the rejected queue with its reason."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pytest

from bridge.errors import ConfigError
from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import (
    AMQP_URL,
    REPO,
    ProxiedDatabase,
    RunningBridge,
    build_config,
    config_dict,
    start_bridge,
    wait_until,
)
from tests.processes import bridge_process
from tests.tcp_proxy import TcpProxy

TOKEN = "billing-secret-token"
CHAT = -1001234567890
PRODUCERS: dict[str, Any] = {"billing": {"token": TOKEN, "chats": [CHAT]}}


@dataclass
class RabbitUser:
    name: str
    password: str

    @property
    def url(self) -> str:
        return re.sub(r"//[^@]*@", f"//{self.name}:{self.password}@", AMQP_URL)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
async def rabbit_user() -> AsyncIterator[RabbitUser]:
    """A RabbitMQ user of its own, as a producer gets: the broker checks the user_id
    property of what it publishes against it."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to create a RabbitMQ user")
    user = RabbitUser(f"ab-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
    await asyncio.to_thread(_rabbitmqctl, "add_user", user.name, user.password)
    try:
        await asyncio.to_thread(_rabbitmqctl, "set_permissions", user.name, ".*", ".*", ".*")
        yield user
    finally:
        await asyncio.to_thread(_rabbitmqctl, "delete_user", user.name)


async def publish(
    exchange_name: str,
    body: bytes | dict[str, Any],
    routing_key: str = "billing",
    *,
    url: str = AMQP_URL,
    **properties: Any,
) -> None:
    """Publish persistent, and return once RabbitMQ confirmed it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        message = aio_pika.Message(
            raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties
        )
        await exchange.publish(message, routing_key=routing_key)


async def rejected(queue_name: str, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The first ``count`` messages of the rejected queue, taken off it."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{queue_name}.rejected", ensure=False)

        async def enough() -> bool:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                taken.append(message)
            return len(taken) >= count

        await wait_until(enough)
    return taken


def outcomes(bridge: RunningBridge, producer: str, outcome: str) -> float:
    value = bridge.metrics.registry.get_sample_value(
        "alertbridge_ingress_messages_total", {"producer": producer, "outcome": outcome}
    )
    return value or 0.0


async def delivered(bridge: RunningBridge, message_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {}

    async def done() -> bool:
        answer = await bridge.client.get(
            f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        record.update(answer.json())
        return bool(answer.status_code == 200 and record["status"] == "delivered")

    await wait_until(done)
    return record


@pytest.fixture
async def ingress(bridge_factory: Any) -> RunningBridge:
    bridge: RunningBridge = await bridge_factory(producers=PRODUCERS)
    return bridge


async def test_a_message_published_twice_is_one_telegram_message(
    ingress: RunningBridge, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    body = {"message_id": "inv-1", "chat_id": CHAT, "text": "Invoice <b>42</b> paid"}
    exchange = amqp_names["ingress_exchange"]
    await publish(exchange, body)
    await publish(exchange, body)
    await wait_until(lambda: outcomes(ingress, "billing", "replayed") == 1)
    assert outcomes(ingress, "billing", "accepted") == 1

    record = await delivered(ingress, "inv-1")
    (sent,) = telegram.sent_messages()
    assert (sent.chat_id, sent.text) == (CHAT, "Invoice 42 paid")
    assert record["deliveries"][0]["telegram_message_id"] == sent.message_id
    # A third time, after it was sent: still nothing more.
    await publish(exchange, body)
    await wait_until(lambda: outcomes(ingress, "billing", "replayed") == 2)
    assert len(telegram.sent_messages()) == 1


@pytest.mark.parametrize("receivers", [1, 2])
async def test_messages_reach_the_chat_in_the_order_published(
    bridge_factory: Any, amqp_names: dict[str, str], telegram: TelegramDouble, receivers: int
) -> None:
    """Published back to back, they are stored in batches: within a batch too, the
    order published is the order sent (the keys sort in another); and with two
    receivers, one consumes at a time."""
    for _ in range(receivers):
        await bridge_factory(producers=PRODUCERS)
    texts = [f"step {i:02d}" for i in range(40)]
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(amqp_names["ingress_exchange"], ensure=False)
        confirms = [
            exchange.publish(
                aio_pika.Message(
                    json.dumps({"message_id": t, "chat_id": CHAT, "text": t}).encode(),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="billing",
            )
            for t in texts
        ]
        await asyncio.gather(*confirms)  # published in order, confirmed together
    await telegram.wait_for_messages(len(texts))
    assert [m.text for m in telegram.sent_messages(CHAT)] == texts


async def test_what_is_refused_lands_in_the_rejected_queue_with_its_reason(
    ingress: RunningBridge, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    exchange = amqp_names["ingress_exchange"]
    good = {"message_id": "same-id", "chat_id": CHAT, "text": "first"}
    await publish(exchange, good)
    await wait_until(lambda: outcomes(ingress, "billing", "accepted") == 1)
    cases = [
        (b"{not json", "billing", "400:body"),
        (
            json.dumps({"message_id": "n", "chat_id": 777, "text": "x"}).encode(),
            "billing",
            "403:chats",
        ),
        (
            json.dumps({"message_id": "h", "chat_id": CHAT, "text": "<b>x"}).encode(),
            "billing",
            "422:text",
        ),
        (json.dumps(good).encode(), "nobody", "401:routing_key"),
        (json.dumps({**good, "text": "second"}).encode(), "billing", "409:message_id"),
    ]
    for raw, key, _ in cases:
        await publish(exchange, raw, key, correlation_id=f"case-{key}", headers={"mine": "kept"})
    taken = await rejected(amqp_names["ingress_queue"], len(cases))
    by_body = {(bytes(m.body), m.routing_key): m for m in taken}
    for raw, key, reason in cases:
        message = by_body[(raw, key)]  # the original body, under its routing key
        headers = message.headers or {}
        assert headers["x-alertbridge-reason"] == reason
        assert isinstance(headers["x-alertbridge-error"], str) and headers["x-alertbridge-error"]
        assert headers["mine"] == "kept" and message.correlation_id == f"case-{key}"
    assert "differs in: text" in str(
        by_body[(cases[4][0], "billing")].headers["x-alertbridge-error"]
    )
    for status, n in [
        ("rejected_400", 1),
        ("rejected_403", 1),
        ("rejected_422", 1),
        ("rejected_409", 1),
    ]:
        assert outcomes(ingress, "billing", status) == n
    assert outcomes(ingress, "", "rejected_401") == 1
    await delivered(ingress, "same-id")
    assert [m.text for m in telegram.sent_messages()] == ["first"]


async def test_with_amqp_user_only_that_rabbitmq_user_speaks_for_the_producer(
    bridge_factory: Any,
    amqp_names: dict[str, str],
    telegram: TelegramDouble,
    rabbit_user: RabbitUser,
) -> None:
    producers = {"billing": {**PRODUCERS["billing"], "amqp_user": rabbit_user.name}}
    bridge: RunningBridge = await bridge_factory(producers=producers)
    exchange = amqp_names["ingress_exchange"]
    body = {"message_id": "u", "chat_id": CHAT, "text": "who sent this"}
    # As guest: RabbitMQ lets guest say it is guest, not that it is the producer's user.
    await publish(exchange, body, user_id="guest")
    await publish(exchange, body)  # no user_id at all
    taken = await rejected(amqp_names["ingress_queue"], 2)
    assert [(m.headers or {})["x-alertbridge-reason"] for m in taken] == ["401:user_id"] * 2
    assert (taken[0].headers or {})["x-alertbridge-user-id"] == "guest"
    assert outcomes(bridge, "billing", "rejected_401") == 2

    await publish(exchange, body, url=rabbit_user.url, user_id=rabbit_user.name)
    await delivered(bridge, "u")
    assert [m.text for m in telegram.sent_messages()] == ["who sent this"]


async def test_a_message_published_while_the_database_is_down_is_stored_once_it_is_back(
    proxied_database: ProxiedDatabase, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    proxy, through = proxied_database.proxy, proxied_database.url
    bridge = await start_bridge(
        build_config(config_dict(through, amqp_names, telegram.url, producers=PRODUCERS))
    )
    texts = ["while the database is down", "and after that", "and last"]
    exchange = amqp_names["ingress_exchange"]
    try:
        await proxy.cut()
        await publish(exchange, {"message_id": "down", "chat_id": CHAT, "text": texts[0]})
        await wait_until(lambda: outcomes(bridge, "billing", "store_unavailable") >= 1)
        for n, text in enumerate(texts[1:], 1):  # behind the one held
            await publish(exchange, {"message_id": f"down-{n}", "chat_id": CHAT, "text": text})
        # Tried, not stored, and tried again: held, not dropped.
        await wait_until(lambda: outcomes(bridge, "billing", "store_unavailable") >= 3)
        assert outcomes(bridge, "billing", "accepted") == 0
        assert not telegram.sent_messages()

        await proxy.restore()
        await delivered(bridge, "down-2")
        assert outcomes(bridge, "billing", "accepted") == 3
    finally:
        await bridge.shutdown()
    assert [m.text for m in telegram.sent_messages()] == texts  # each once, in order


def readme_producer() -> str:
    """The README's aio-pika producer, as printed there."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### RabbitMQ ingress", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the RabbitMQ ingress section lost its Python producer"
    return match.group(1)


async def test_the_readme_producer_is_delivered_by_a_receiver_and_a_worker_process(
    database_url: str,
    amqp_names: dict[str, str],
    telegram: TelegramDouble,
    rabbit_user: RabbitUser,
) -> None:
    """The README's producer, run as printed, against `alertbridge receiver` and
    `alertbridge worker` as real processes: the receiver is the ingress's side."""
    producers = {"billing": {**PRODUCERS["billing"], "amqp_user": rabbit_user.name}}
    config = config_dict(database_url, amqp_names, telegram.url, producers=producers)
    code = readme_producer()
    # Only where the README names this machine's broker, exchange and user.
    for printed, here in [
        ("amqp://billing:s3cret@rabbitmq:5672/", rabbit_user.url),
        ('"alertbridge.ingress"', json.dumps(amqp_names["ingress_exchange"])),
        ('user_id="billing"', f"user_id={rabbit_user.name!r}"),
    ]:
        assert printed in code, f"the README's producer no longer has {printed}"
        code = code.replace(printed, here)
    async with (
        bridge_process(config, "receiver") as receiver,
        bridge_process(config, "worker"),
        httpx.AsyncClient(base_url=receiver.url, timeout=10) as client,
    ):
        done = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=REPO)
        assert await done.wait() == 0

        async def sent() -> bool:
            answer = await client.get(
                "/v1/messages/invoice-2026-0042", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            return bool(answer.status_code == 200 and answer.json()["status"] == "delivered")

        await wait_until(sent)
    assert [m.text for m in telegram.sent_messages()] == ["Invoice 42 paid"]


async def ingress_reported(bridge: RunningBridge, *, connected: bool) -> bool:
    """/readyz says the ingress is (or is not) consuming; HTTP is served either way."""
    ready = await bridge.client.get("/readyz")
    return bool(ready.status_code == 200 and ready.json()["ingress_connected"] is connected)


async def test_the_ingress_comes_back_after_the_broker_connection_is_lost(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    data = config_dict(database_url, amqp_names, telegram.url, producers=PRODUCERS)
    data["amqp_url"] = re.sub(r"@[^/]*/", f"@127.0.0.1:{proxy.port}/", AMQP_URL)
    bridge = await start_bridge(build_config(data))
    exchange = amqp_names["ingress_exchange"]
    try:
        await publish(exchange, {"message_id": "before", "chat_id": CHAT, "text": "before"})
        await delivered(bridge, "before")
        assert await ingress_reported(bridge, connected=True)

        await proxy.cut()  # the bridge's connections drop; the broker keeps what comes
        await wait_until(lambda: ingress_reported(bridge, connected=False))
        await publish(exchange, {"message_id": "during", "chat_id": CHAT, "text": "during"})
        await proxy.restore()
        await delivered(bridge, "during")
        await wait_until(lambda: ingress_reported(bridge, connected=True))
    finally:
        await bridge.shutdown()
        await proxy.stop()
    assert [m.text for m in telegram.sent_messages()] == ["before", "during"]


async def test_a_recipient_is_reached_once_linked_and_a_replay_after_stop_is_acked(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    """Addressed by the producer's own user id, as over HTTP: rejected while not
    linked, sent to the linked chat once linked; after /stop the same message again
    is the replay it is (acked, nothing sent), a new one is rejected again."""
    from tests.integration.test_recipients import ANN, opened_link, said

    config = config_dict(
        database_url, amqp_names, telegram.url, bot={"updates": "polling"}, producers=PRODUCERS
    )
    exchange = amqp_names["ingress_exchange"]
    body = {"message_id": "export-1", "recipient": "user-42", "text": "Your export is ready"}
    async with (
        bridge_process(config, log_level="warning") as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
    ):
        await publish(exchange, body)
        (first,) = await rejected(amqp_names["ingress_queue"], 1)
        assert (first.headers or {})["x-alertbridge-reason"] == "409:recipient"

        await opened_link(client, telegram, "user-42", ANN, token=TOKEN)
        await publish(exchange, body)
        await wait_until(
            lambda: "Your export is ready" in [m.text for m in telegram.sent_messages(ANN)]
        )

        await said(telegram, ANN, "/stop")
        await publish(exchange, body)  # stored before: a replay, acked
        await publish(exchange, {**body, "message_id": "export-2"})  # new: not linked
        (second,) = await rejected(amqp_names["ingress_queue"], 1)
        assert json.loads(second.body)["message_id"] == "export-2"  # the replay was not
        assert (second.headers or {})["x-alertbridge-reason"] == "409:recipient"
    assert [m.text for m in telegram.sent_messages(ANN)].count("Your export is ready") == 1


async def test_an_ingress_queue_declared_otherwise_stops_the_start_saying_what_to_do(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.declare_queue(amqp_names["ingress_queue"], durable=True)  # classic
    config = build_config(config_dict(database_url, amqp_names, telegram.url))
    with pytest.raises(ConfigError, match=r"amqp\.ingress_queue"):
        await start_bridge(config)
