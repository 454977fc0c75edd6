"""The sandbox's chat page.

``GET /`` is a page that shows each chat and topic as Telegram would (it
polls ``GET /sandbox/state``); its buttons go through ``POST /sandbox/press``
to the bridge's real callback handling (the bot polls the sandbox for
updates like it polls Telegram). ``POST /sandbox/webhook`` hands a payload
typed into the page to the bridge, and answers with what the bridge said;
``POST /sandbox/message`` sends a message of the demo producer's own and
``GET /sandbox/message/{id}`` reads its status back. The page also lists the
silences the bot made in the sandbox Alertmanager and the receipts the
bridge sent the demo producer.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from bridge.sandbox.alertmanager import json_object

if TYPE_CHECKING:
    from bridge.sandbox.botapi import StoredMessage
    from bridge.sandbox.server import Sandbox


def add_page_routes(app: web.Application, sandbox: Sandbox) -> None:
    page = resources.files("bridge.sandbox").joinpath("static", "chat.html").read_text("utf-8")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def state(request: web.Request) -> web.Response:
        return web.json_response(sandbox_state(sandbox))

    async def press(request: web.Request) -> web.Response:
        body = await json_object(request)
        try:
            key = (int(body["chat_id"]), int(body["message_id"]))
        except (KeyError, TypeError, ValueError):
            return web.json_response({"ok": False, "error": "chat_id, message_id"}, status=400)
        if key not in sandbox.telegram.messages:
            return web.json_response({"ok": False, "error": "no such message"}, status=404)
        sandbox.telegram.press_button(*key, str(body.get("data", "")))
        return web.json_response({"ok": True})

    async def to_bridge(
        method: str, path: str, token: str | None, body: bytes | None = None
    ) -> web.Response:
        """The bridge's answer to a request made for the page: its status and body."""
        if sandbox.bridge_url is None:
            return web.json_response({"status": 0, "body": "no bridge connected"}, status=503)
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            async with (
                aiohttp.ClientSession() as client,
                client.request(
                    method, f"{sandbox.bridge_url}{path}", data=body, headers=headers
                ) as answer,
            ):
                return web.json_response({"status": answer.status, "body": await answer.text()})
        except aiohttp.ClientError as exc:
            return web.json_response({"status": 0, "body": f"bridge unreachable: {exc}"})

    async def post_payload(request: web.Request) -> web.Response:
        return await to_bridge("POST", "/alertmanager", sandbox.bridge_token, await request.read())

    async def post_message(request: web.Request) -> web.Response:
        return await to_bridge("POST", "/v1/messages", sandbox.producer_token, await request.read())

    async def message_status(request: web.Request) -> web.Response:
        message_id = quote(request.match_info["message_id"], safe="")
        return await to_bridge("GET", f"/v1/messages/{message_id}", sandbox.producer_token)

    app.router.add_get("/", index)
    app.router.add_get("/sandbox/state", state)
    app.router.add_post("/sandbox/press", press)
    app.router.add_post("/sandbox/webhook", post_payload)
    app.router.add_post("/sandbox/message", post_message)
    app.router.add_get("/sandbox/message/{message_id}", message_status)


def sandbox_state(sandbox: Sandbox) -> dict[str, Any]:
    """Every chat, its topics and messages as the page draws them; visible text and
    entities (offsets in UTF-16 units, which are JavaScript string indices)."""
    chats: dict[int, dict[str, Any]] = {}
    for message in sandbox.telegram.sent_messages():
        chat = chats.setdefault(message.chat_id, {"chat_id": message.chat_id, "messages": []})
        chat["messages"].append(_message(message))
    return {
        "chats": sorted(chats.values(), key=lambda c: c["chat_id"]),
        "silences": list(sandbox.alertmanager.silences.values()),
        "bridge": sandbox.bridge_url,
        "receipts": sandbox.receipts.received,
    }


def _message(message: StoredMessage) -> dict[str, Any]:
    markup = message.reply_markup
    if isinstance(markup, str):
        markup = json.loads(markup)
    buttons = [
        [{"text": b.get("text", ""), "data": b.get("callback_data", "")} for b in row]
        for row in (markup or {}).get("inline_keyboard", [])
    ]
    return {
        "message_id": message.message_id,
        "thread_id": message.thread_id,
        "reply_to": message.reply_to,
        "text": message.text,
        "entities": message.entities,
        "silent": message.silent,
        "edited": message.edits > 0,
        "buttons": buttons,
        "date": message.date,
    }
