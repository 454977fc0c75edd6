"""Producers' receipts end to end: `alertbridge serve` as a real process (standalone
SQLite, and PostgreSQL with RabbitMQ), the strict Telegram double, and a producer's
receipt endpoint served here, on a port the system picks."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import config_dict, wait_until
from tests.processes import Served, bridge_process

TOKEN = "billing-secret-token"
SECRET = "billing-hmac-key"
CHAT = -1001234567890
BLOCKED = 4242


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def signed(self) -> bool:
        digest = hmac.new(SECRET.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["X-Alertbridge-Signature"], f"sha256={digest}")


class ReceiptEndpoint:
    """The producer's callback_url. Its socket is bound at once (port 0) but refuses
    connections until ``up()``; ``failing`` answers 500 that many times first."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.failing = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}/receipts"

    async def _receive(self, request: web.Request) -> web.Response:
        status = 200
        if self.failing > 0:
            self.failing -= 1
            status = 500
        self.received.append(Received(dict(request.headers), await request.read(), status))
        return web.Response(status=status)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/receipts", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._sock.listen(128)
        await web.SockSite(self._runner, self._sock).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._sock.close()

    def taken(self) -> list[Received]:
        return [r for r in self.received if r.answered == 200]


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where the spawned bridge keeps its state: both stores."""
    if request.param == "sqlite":
        return {"database_url": None, "amqp_names": None, "sqlite_path": tmp_path / "ab.db"}
    return {
        "database_url": request.getfixturevalue("database_url"),
        "amqp_names": request.getfixturevalue("amqp_names"),
    }


@pytest.fixture
async def endpoint() -> AsyncIterator[ReceiptEndpoint]:
    receiver = ReceiptEndpoint()
    yield receiver
    await receiver.close()


@pytest.fixture
async def served(
    store_settings: dict[str, Any], telegram: TelegramDouble, endpoint: ReceiptEndpoint
) -> AsyncIterator[Served]:
    settings = dict(store_settings)
    config = config_dict(
        settings.pop("database_url"),
        settings.pop("amqp_names"),
        telegram.url,
        **settings,
        producers={
            "billing": {
                "token": TOKEN,
                "chats": [CHAT, BLOCKED],
                "callback_url": endpoint.url,
                "callback_secret": SECRET,
            }
        },
        receipts={
            "backoff_initial": "100ms",
            "backoff_max": "400ms",
            "interval": "100ms",
            "timeout": "2s",
        },
    )
    if config.get("sqlite_path") is not None:
        config["sqlite_path"] = str(config["sqlite_path"])
    async with bridge_process(config) as process:
        yield process


async def post(served: Served, message_id: str, chat_id: int) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        answer = await client.post(
            "/v1/messages",
            json={"message_id": message_id, "chat_id": chat_id, "text": f"<b>{message_id}</b>"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 202, answer.text


async def status(served: Served, message_id: str) -> dict[str, Any]:
    """GET /v1/messages/{id}: the message's record, its receipts included."""
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        answer = await client.get(
            f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def metric(served: Served, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} " if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_delivered_message_s_receipt_arrives_signed(
    served: Served, endpoint: ReceiptEndpoint, telegram: TelegramDouble
) -> None:
    await endpoint.up()
    await post(served, "inv-1", CHAT)
    await wait_until(lambda: endpoint.taken())
    (receipt,) = endpoint.taken()
    assert receipt.signed
    (sent,) = telegram.sent_messages()
    body = receipt.json
    assert receipt.headers["X-Alertbridge-Event-Id"] == body["event_id"]
    assert receipt.headers["Content-Type"] == "application/json"
    assert {k: body[k] for k in ("event", "producer", "message_id", "chat_id", "status")} == {
        "event": "message.delivered",
        "producer": "billing",
        "message_id": "inv-1",
        "chat_id": CHAT,
        "status": "delivered",
    }
    assert (body["telegram_message_id"], body["attempts"]) == (sent.message_id, 1)


async def test_a_user_who_blocked_the_bot_gets_a_failed_receipt_saying_forbidden(
    served: Served, endpoint: ReceiptEndpoint, telegram: TelegramDouble
) -> None:
    telegram.block_chat(BLOCKED)
    await endpoint.up()
    await post(served, "welcome", BLOCKED)
    await wait_until(lambda: endpoint.taken())
    (receipt,) = endpoint.taken()
    assert receipt.signed
    body = receipt.json
    assert (body["event"], body["status"], body["reason"]) == (
        "message.failed",
        "failed",
        "forbidden",
    )
    assert "blocked" in body["error"] and body["telegram_message_id"] is None
    assert telegram.sent_messages() == []


async def test_an_endpoint_down_then_failing_gets_each_receipt_later_once(
    served: Served, endpoint: ReceiptEndpoint, telegram: TelegramDouble
) -> None:
    await post(served, "a", CHAT)
    await post(served, "b", CHAT)
    await telegram.wait_for_messages(2)
    # Down: refused, and retried while refused; the producer can see it in the status.
    await wait_until(lambda: metric(served, "alertbridge_receipts_total", producer="billing",
                                    outcome="retried"))  # fmt: skip
    (pending,) = (await status(served, "a"))["receipts"]
    assert (pending["event"], pending["status"]) == ("message.delivered", "pending")
    assert pending["attempts"] >= 1 and pending["last_error"]
    endpoint.failing = 3  # then up, answering 500 a few times
    await endpoint.up()

    async def settled() -> bool:
        return (
            len(endpoint.taken()) == 2 and await metric(served, "alertbridge_receipts_pending") == 0
        )

    await wait_until(settled)
    assert all(r.signed for r in endpoint.received)
    assert [r.answered for r in endpoint.received[:3]] == [500, 500, 500]
    taken = sorted(r.json["message_id"] for r in endpoint.taken())
    assert taken == ["a", "b"]
    ids = {r.json["event_id"] for r in endpoint.taken()}
    assert len(ids) == 2
    # What was answered 500 was the same events again, nothing else.
    assert {r.json["event_id"] for r in endpoint.received} == ids
    sent = await metric(served, "alertbridge_receipts_total", producer="billing", outcome="sent")
    assert sent == 2
    (taken_a,) = (await status(served, "a"))["receipts"]
    assert taken_a["status"] == "sent" and taken_a["event_id"] == pending["event_id"]
