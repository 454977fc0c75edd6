"""The few Alertmanager API v2 calls the bot makes, in memory, so the sandbox's
Silence and Undo buttons work without an Alertmanager: silences are created,
listed and expired; no alert is ever firing here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


class SandboxAlertmanager:
    def __init__(self) -> None:
        self.silences: dict[str, dict[str, Any]] = {}

    def add_routes(self, app: web.Application) -> None:
        async def list_silences(request: web.Request) -> web.Response:
            return web.json_response(list(self.silences.values()))

        async def create_silence(request: web.Request) -> web.Response:
            body = await json_object(request)
            silence_id = str(uuid.uuid4())
            self.silences[silence_id] = {
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
            silence = self.silences.get(request.match_info["silence_id"])
            if silence is None:
                return web.json_response({"error": "silence not found"}, status=404)
            silence["status"] = {"state": "expired"}
            silence["endsAt"] = datetime.now(UTC).isoformat()
            return web.json_response({})

        async def alerts(request: web.Request) -> web.Response:
            return web.json_response([])  # the sandbox has no alert state of its own

        app.router.add_get("/api/v2/silences", list_silences)
        app.router.add_post("/api/v2/silences", create_silence)
        app.router.add_delete("/api/v2/silence/{silence_id}", expire_silence)
        app.router.add_get("/api/v2/alerts", alerts)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 answered by aiohttp."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON object expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object expected")
    return body
