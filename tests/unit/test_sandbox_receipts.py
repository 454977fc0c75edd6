"""The demo producer's receipt endpoint: what a producer's callback should do."""

from __future__ import annotations

import hashlib
import hmac
import json

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.sandbox.receipts import ReceiptInbox

SECRET = "demo-receipt-secret"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-alertbridge-signature": f"sha256={digest}", "content-type": "application/json"}


async def client_of(inbox: ReceiptInbox) -> TestClient:  # type: ignore[type-arg]
    app = web.Application()
    inbox.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_a_receipt_is_kept_once_per_event_id_and_only_when_signed() -> None:
    inbox = ReceiptInbox()
    inbox.secret = SECRET
    client = await client_of(inbox)
    try:
        body = json.dumps({"event": "message.delivered", "event_id": "e1"}).encode()
        for _ in range(2):  # at least once: the repeat is answered 2xx and not kept twice
            answer = await client.post("/sandbox/receipts", data=body, headers=signed(body))
            assert answer.status == 200
        forged = await client.post("/sandbox/receipts", data=body, headers=signed(body, "other"))
        assert forged.status == 401
        tampered = body.replace(b"e1", b"e2")
        answer = await client.post("/sandbox/receipts", data=tampered, headers=signed(body))
        assert answer.status == 401
        assert [r["event_id"] for r in inbox.received] == ["e1"]
    finally:
        await client.close()


async def test_without_a_secret_nothing_is_accepted() -> None:
    inbox = ReceiptInbox()
    client = await client_of(inbox)
    try:
        body = b'{"event_id": "e1"}'
        assert (
            await client.post("/sandbox/receipts", data=body, headers=signed(body))
        ).status == 401
        assert inbox.received == []
    finally:
        await client.close()
