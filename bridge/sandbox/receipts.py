"""The demo producer's receipt endpoint: ``POST /sandbox/receipts``.

What a producer's ``callback_url`` does, in the open: check the signature over
the exact body, keep each event id once (receipts come at least once), and
show what arrived on the chat page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp import web


class ReceiptInbox:
    def __init__(self) -> None:
        self.secret: str | None = None
        self.received: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def signature_valid(self, body: bytes, header: str) -> bool:
        if self.secret is None:
            return False
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.signature_valid(body, request.headers.get("x-alertbridge-signature", "")):
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            receipt = json.loads(body)
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if not isinstance(receipt, dict):
            return web.json_response({"error": "not a JSON object"}, status=400)
        event_id = str(receipt.get("event_id", ""))
        # At least once: a repeat is answered 2xx (so it stops) and not kept twice.
        if event_id not in self._seen:
            self._seen.add(event_id)
            self.received.append(receipt)
        return web.json_response({"ok": True})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/sandbox/receipts", self.receive)
