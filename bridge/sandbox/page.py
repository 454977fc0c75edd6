"""The sandbox's chat page, and a small Alertmanager API for silences made from it.

``GET /`` is a page that shows each chat and topic as Telegram would (it
polls ``GET /sandbox/state``); its buttons go through ``POST /sandbox/press``
to the bridge's real callback handling (the bot polls the sandbox for
updates like it polls Telegram). ``POST /sandbox/webhook`` hands a payload
typed into the page to the bridge, and answers with what the bridge said.

``/api/v2/silences`` and ``/api/v2/alerts`` answer the calls the bot makes
of Alertmanager, so Silence and Undo work without one: the page lists the
silences the bot made.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from bridge.sandbox.botapi import StoredMessage, TelegramDouble


def add_page_routes(app: web.Application, sandbox: TelegramDouble) -> None:
    page = resources.files("bridge.sandbox").joinpath("static", "chat.html").read_text("utf-8")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def state(request: web.Request) -> web.Response:
        return web.json_response(sandbox_state(sandbox))

    async def press(request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            key = (int(body["chat_id"]), int(body["message_id"]))
        except (KeyError, TypeError, ValueError):
            return web.json_response({"ok": False, "error": "chat_id, message_id"}, status=400)
        if key not in sandbox.messages:
            return web.json_response({"ok": False, "error": "no such message"}, status=404)
        sandbox.press_button(*key, str(body.get("data", "")))
        return web.json_response({"ok": True})

    async def post_payload(request: web.Request) -> web.Response:
        if sandbox.bridge_url is None:
            return web.json_response({"status": 0, "body": "no bridge connected"}, status=503)
        headers = {"content-type": "application/json"}
        if sandbox.bridge_token:
            headers["authorization"] = f"Bearer {sandbox.bridge_token}"
        try:
            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    f"{sandbox.bridge_url}/alertmanager", data=await request.read(), headers=headers
                ) as answer,
            ):
                return web.json_response({"status": answer.status, "body": await answer.text()})
        except aiohttp.ClientError as exc:
            return web.json_response({"status": 0, "body": f"bridge unreachable: {exc}"})

    async def list_silences(request: web.Request) -> web.Response:
        return web.json_response(list(sandbox.silences.values()))

    async def create_silence(request: web.Request) -> web.Response:
        body = await _json_object(request)
        silence_id = str(uuid.uuid4())
        sandbox.silences[silence_id] = {
            "id": silence_id,
            "status": {"state": "active"},
            "matchers": body.get("matchers", []),
            "startsAt": body.get("startsAt", ""),
            "endsAt": body.get("endsAt", ""),
            "createdBy": body.get("createdBy", ""),
            "comment": body.get("comment", ""),
        }
        return web.json_response({"silenceID": silence_id})

    async def expire_silence(request: web.Request) -> web.Response:
        silence = sandbox.silences.get(request.match_info["silence_id"])
        if silence is None:
            return web.json_response({"error": "silence not found"}, status=404)
        silence["status"] = {"state": "expired"}
        silence["endsAt"] = datetime.now(UTC).isoformat()
        return web.json_response({})

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response([])  # the sandbox has no alert state of its own

    app.router.add_get("/", index)
    app.router.add_get("/sandbox/state", state)
    app.router.add_post("/sandbox/press", press)
    app.router.add_post("/sandbox/webhook", post_payload)
    app.router.add_get("/api/v2/silences", list_silences)
    app.router.add_post("/api/v2/silences", create_silence)
    app.router.add_delete("/api/v2/silence/{silence_id}", expire_silence)
    app.router.add_get("/api/v2/alerts", alerts)


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 answered by aiohttp."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON object expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object expected")
    return body


def sandbox_state(sandbox: TelegramDouble) -> dict[str, Any]:
    """Every chat, its topics and messages as the page draws them; visible text and
    entities (offsets in UTF-16 units, which are JavaScript string indices)."""
    chats: dict[int, dict[str, Any]] = {}
    for message in sandbox.sent_messages():
        chat = chats.setdefault(message.chat_id, {"chat_id": message.chat_id, "messages": []})
        chat["messages"].append(_message(message))
    return {
        "chats": sorted(chats.values(), key=lambda c: c["chat_id"]),
        "silences": list(sandbox.silences.values()),
        "bridge": sandbox.bridge_url,
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
