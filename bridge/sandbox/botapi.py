"""A Telegram Bot API double: real HTTP on 127.0.0.1, as strict as Telegram.

The bridge reaches it through the same `telegram.api_url` setting a user sets
for a local Bot API server, so no code path inside the bridge is mocked.

Strict where Telegram is strict: the HTML parse mode accepts only Telegram's
tags and entities, visible text is limited to 4096 UTF-16 code units, and the
error answers (429 with retry_after, 403 blocked, 400 chat not found, message
not modified, ...) carry Telegram's own descriptions. Faults are scripted per
method: 5xx, 429, a connection dropped after the message was accepted, a hang.

Run it alone: ``python -m tests.telegram_double --port 8081``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import signal
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
LIMIT = 4096


class EntityParseError(Exception):
    """What Telegram answers as "Bad Request: can't parse entities: ..."."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_ENTITY = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[^>]*)?)\s*(/?)>")
_ATTR = re.compile(r'\s*([A-Za-z-]+)(?:\s*=\s*(?:"([^"]*)"|\'([^\']*)\'|([^\s"\'>]+)))?')


def _decode_entity(match: re.Match[str], offset: int) -> str:
    body = match.group(1)
    if body.startswith("#x"):
        return chr(int(body[2:], 16))
    if body.startswith("#"):
        return chr(int(body[1:]))
    if body not in NAMED_ENTITIES:
        raise EntityParseError(f'Unsupported HTML entity "&{body};" at byte offset {offset}')
    return NAMED_ENTITIES[body]


def _decode_text(chunk: str, base: int) -> str:
    out: list[str] = []
    pos = 0
    while (amp := chunk.find("&", pos)) != -1:
        out.append(chunk[pos:amp])
        match = _ENTITY.match(chunk, amp)
        if match is None:
            # Real Telegram passes some bare ampersands through; rejecting
            # them all is stricter, so a template that relies on it fails here.
            raise EntityParseError(f"Character entity expected at byte offset {base + amp}")
        out.append(_decode_entity(match, base + amp))
        pos = match.end()
    out.append(chunk[pos:])
    return "".join(out)


def _check_attributes(tag: str, raw: str, offset: int) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for m in _ATTR.finditer(raw):
        if not m.group(1):
            continue
        value = next((g for g in m.group(2, 3, 4) if g is not None), "")
        attrs[m.group(1).lower()] = _decode_text(value, offset)
    if tag == "span" and attrs.get("class") != "tg-spoiler":
        raise EntityParseError(f'Unsupported start tag "span" at byte offset {offset}')
    if tag == "a" and "href" not in attrs:
        # Telegram shows such a link as text; treat it as an error to be strict.
        raise EntityParseError(f'Tag "a" must have attribute "href" at byte offset {offset}')
    return attrs


def parse_telegram_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Visible text and entities of an HTML-mode message, or EntityParseError."""
    visible: list[str] = []
    entities: list[dict[str, Any]] = []
    # (tag, start offset in visible UTF-16 units, attributes)
    stack: list[tuple[str, int, dict[str, str]]] = []
    pos = 0
    while pos < len(text):
        lt = text.find("<", pos)
        end = len(text) if lt == -1 else lt
        visible.append(_decode_text(text[pos:end], pos))
        if lt == -1:
            break
        match = _TAG.match(text, lt)
        if match is None:
            raise EntityParseError(f"Unexpected end of name token at byte offset {lt}")
        closing, tag, raw_attrs = match.group(1), match.group(2).lower(), match.group(3)
        if tag not in ALLOWED_TAGS:
            kind = "end" if closing else "start"
            raise EntityParseError(f'Unsupported {kind} tag "{tag}" at byte offset {lt}')
        here = utf16_len("".join(visible))
        if closing:
            if not stack or stack[-1][0] != tag:
                raise EntityParseError(f"Unexpected end tag at byte offset {lt}")
            _, start, attrs = stack.pop()
            if here > start:
                entity = {"type": tag, "offset": start, "length": here - start}
                if tag == "a":
                    entity["url"] = attrs["href"]
                entities.append(entity)
        else:
            stack.append((tag, here, _check_attributes(tag, raw_attrs, lt)))
        pos = match.end()
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(visible), entities


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    response: dict[str, Any] | None = None


@dataclass
class StoredMessage:
    chat_id: int
    message_id: int
    text: str
    raw_text: str
    parse_mode: str | None
    thread_id: int | None = None
    silent: bool = False
    reply_to: int | None = None
    reply_markup: Any = None
    edits: int = 0
    date: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Fault:
    kind: str  # "error", "drop", "hang"
    status: int = 500
    description: str = ""
    parameters: dict[str, Any] | None = None
    seconds: float = 0.0


class _Reply(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _Reply(400, f"Bad Request: invalid {name}") from None


def _json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class TelegramDouble:
    def __init__(
        self, *, token: str = "123:ABC", latency: float = 0.0, enforce_rate_limits: bool = False
    ) -> None:
        self.token = token
        self.latency = latency
        self.enforce_rate_limits = enforce_rate_limits
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self.rate_limited = 0
        self.url = ""
        self._sent: list[StoredMessage] = []
        self._next_id: dict[int, int] = defaultdict(int)
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._blocked: dict[int, str] = {}
        self._missing: set[int] = set()
        self._migrated: dict[int, int] = {}
        self._updates: list[dict[str, Any]] = []
        self._new_update = asyncio.Event()
        self._last_update_id = 100
        # Where the chat page's "post a payload" form sends to (see connect_bridge).
        self.bridge_url: str | None = None
        self.bridge_token: str | None = None
        # Silences made through the sandbox Alertmanager API (bridge/sandbox/page.py).
        self.silences: dict[str, dict[str, Any]] = {}
        self._sent_times: dict[int, deque[float]] = defaultdict(deque)
        self._bot_times: deque[float] = deque()
        self._new_message = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # The chat page and the sandbox Alertmanager share the port: one URL to open.
        from bridge.sandbox.page import add_page_routes

        add_page_routes(app, self)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{bound}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def connect_bridge(self, url: str, bearer_token: str | None = None) -> None:
        """The bridge the chat page's payload form posts to (``url``/alertmanager)."""
        self.bridge_url = url.rstrip("/")
        self.bridge_token = bearer_token

    # -- what tests read -------------------------------------------------------

    def sent_messages(self, chat_id: int | None = None) -> list[StoredMessage]:
        return [m for m in self._sent if chat_id is None or m.chat_id == chat_id]

    async def wait_for_messages(self, n: int, timeout: float = 30.0) -> list[StoredMessage]:
        """Wait until ``n`` messages were sent; returns every message sent so far."""
        deadline = time.monotonic() + timeout
        while len(self._sent) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._sent)} of {n} messages after {timeout}s")
            self._new_message.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_message.wait(), timeout=remaining)
        return list(self._sent)

    # -- fault injection -------------------------------------------------------

    def fail_next(
        self,
        n: int,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        method: str = "sendMessage",
    ) -> None:
        self._faults[method].extend(_Fault("error", status, description) for _ in range(n))

    def rate_limit_next(self, n: int, *, retry_after: int, method: str = "sendMessage") -> None:
        fault = _Fault(
            "error",
            429,
            f"Too Many Requests: retry after {retry_after}",
            {"retry_after": retry_after},
        )
        self._faults[method].extend(fault for _ in range(n))

    def drop_after_accept_next(self, n: int, method: str = "sendMessage") -> None:
        self._faults[method].extend(_Fault("drop") for _ in range(n))

    def hang_next(self, n: int, seconds: float, method: str = "sendMessage") -> None:
        self._faults[method].extend(_Fault("hang", seconds=seconds) for _ in range(n))

    def block_chat(self, chat_id: int) -> None:
        self._blocked[chat_id] = "Forbidden: bot was blocked by the user"

    def kick_from_chat(self, chat_id: int) -> None:
        self._blocked[chat_id] = "Forbidden: bot was kicked from the supergroup chat"

    def remove_chat(self, chat_id: int) -> None:
        self._missing.add(chat_id)

    def migrate_chat(self, old: int, new: int) -> None:
        self._migrated[old] = new

    def push_update(self, update: dict[str, Any]) -> None:
        self._updates.append(update)
        self._new_update.set()

    # -- people in the chats (updates, for getUpdates or a webhook) ----------------

    def _update_id(self) -> int:
        self._last_update_id += 1
        return self._last_update_id

    @staticmethod
    def _user(user_id: int, username: str | None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        if username:
            user["username"] = username
        return user

    def user_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int = 1001,
        username: str | None = "oncall",
        reply_to: int | None = None,
        push: bool = True,
    ) -> dict[str, Any]:
        """A person writes ``text`` (a reply to message ``reply_to``): the update."""
        self._next_id[chat_id] += 1
        chat = {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"}
        message: dict[str, Any] = {
            "message_id": self._next_id[chat_id],
            "date": int(time.time()),
            "chat": chat,
            "from": self._user(user_id, username),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if reply_to is not None:
            original = self.messages.get((chat_id, reply_to))
            message["reply_to_message"] = (
                self._message_json(original)
                if original is not None
                else {"message_id": reply_to, "date": int(time.time()), "chat": chat}
            )
        update = {"update_id": self._update_id(), "message": message}
        if push:
            self.push_update(update)
        return update

    def press_button(
        self,
        chat_id: int,
        message_id: int,
        callback_data: str,
        *,
        user_id: int = 1001,
        username: str | None = "oncall",
        push: bool = True,
    ) -> dict[str, Any]:
        """A person presses an inline button under message ``message_id``: the update."""
        update = {
            "update_id": self._update_id(),
            "callback_query": {
                "id": f"cq{self._last_update_id}",
                "from": self._user(user_id, username),
                "chat_instance": str(chat_id),
                "message": self._message_json(self.messages[(chat_id, message_id)]),
                "data": callback_data,
            },
        }
        if push:
            self.push_update(update)
        return update

    # -- HTTP ------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        if request.method == "GET":
            return dict(request.query)
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.match_info["token"] != self.token:
            return self._answer(call, _Reply(401, "Unauthorized"))
        fault = self._faults[method].popleft() if self._faults[method] else None
        if fault is not None and fault.kind == "error":
            return self._answer(call, _Reply(fault.status, fault.description, fault.parameters))
        if method == "getUpdates":
            await self._wait_for_updates(params)
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            return self._answer(call, _Reply(404, "Not Found: method not found"))
        try:
            result = handler(params)
        except _Reply as reply:
            return self._answer(call, reply)
        if fault is not None and fault.kind == "drop":
            # Accepted and stored, then the connection dies before the answer.
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        return self._answer(call, result)

    def _answer(self, call: Call, result: Any) -> web.Response:
        if isinstance(result, _Reply):
            body: dict[str, Any] = {
                "ok": False,
                "error_code": result.status,
                "description": result.description,
            }
            if result.parameters:
                body["parameters"] = result.parameters
            call.response = body
            return web.json_response(body, status=result.status)
        call.response = {"ok": True, "result": result}
        return web.json_response(call.response)

    # -- methods ---------------------------------------------------------------

    def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": int(self.token.split(":")[0]),
            "is_bot": True,
            "first_name": "Alertbridge Test",
            "username": "alertbridge_test_bot",
        }

    def _chat(self, params: dict[str, Any]) -> int:
        raw = params.get("chat_id")
        if raw is None or not re.fullmatch(r"-?\d+", str(raw)):
            raise _Reply(400, "Bad Request: chat not found")
        chat_id = int(raw)
        if chat_id in self._missing:
            raise _Reply(400, "Bad Request: chat not found")
        if chat_id in self._blocked:
            raise _Reply(403, self._blocked[chat_id])
        if chat_id in self._migrated:
            raise _Reply(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[chat_id]},
            )
        return chat_id

    def _text(self, params: dict[str, Any]) -> tuple[str, str, str | None]:
        raw = params.get("text")
        if raw is None or raw == "":
            raise _Reply(400, "Bad Request: message text is empty")
        parse_mode = params.get("parse_mode") or None
        if parse_mode is not None and parse_mode.upper() == "HTML":
            try:
                visible, _ = parse_telegram_html(raw)
            except EntityParseError as exc:
                raise _Reply(400, f"Bad Request: can't parse entities: {exc}") from exc
        elif parse_mode is None:
            visible = raw
        else:
            raise _Reply(400, f"Bad Request: unsupported parse_mode {parse_mode}")
        if not visible.strip():
            raise _Reply(400, "Bad Request: message text is empty")
        if utf16_len(visible) > LIMIT:
            raise _Reply(400, "Bad Request: message is too long")
        return raw, visible, parse_mode

    def _markup(self, params: dict[str, Any]) -> Any:
        markup = _json_field(params.get("reply_markup"))
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise _Reply(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _rate_limit(self, chat_id: int) -> None:
        if not self.enforce_rate_limits:
            return
        now = time.monotonic()
        waits: list[float] = []
        chat = self._sent_times[chat_id]
        while chat and now - chat[0] >= 60:
            chat.popleft()
        if chat and now - chat[-1] < 1.0:
            waits.append(1.0 - (now - chat[-1]))
        if chat_id < 0 and len(chat) >= 20:
            waits.append(60 - (now - chat[-20]))
        while self._bot_times and now - self._bot_times[0] >= 1.0:
            self._bot_times.popleft()
        if len(self._bot_times) >= 30:
            waits.append(1.0 - (now - self._bot_times[0]))
        if waits:
            self.rate_limited += 1
            retry_after = max(1, math.ceil(max(waits)))
            raise _Reply(
                429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
            )
        chat.append(now)
        self._bot_times.append(now)

    def _message_json(self, m: StoredMessage) -> dict[str, Any]:
        chat: dict[str, Any] = {
            "id": m.chat_id,
            "type": "supergroup" if m.chat_id < 0 else "private",
        }
        chat["title" if m.chat_id < 0 else "first_name"] = f"chat {m.chat_id}"
        out: dict[str, Any] = {
            "message_id": m.message_id,
            "date": m.date,
            "chat": chat,
            "text": m.text,
        }
        if m.thread_id is not None:
            out["message_thread_id"] = m.thread_id
        if m.reply_to is not None:
            out["reply_to_message"] = {
                "message_id": m.reply_to,
                "date": m.date,
                "chat": chat,
            }
        if m.edits:
            out["edit_date"] = int(time.time())
        if m.reply_markup:
            out["reply_markup"] = m.reply_markup
        return out

    def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        raw, visible, parse_mode = self._text(params)
        markup = self._markup(params)
        reply = _json_field(params.get("reply_parameters")) or {}
        reply_to = reply.get("message_id", params.get("reply_to_message_id"))
        if reply_to is not None:
            reply_to = _int(reply_to, "reply message id")
            allow = reply.get("allow_sending_without_reply") or params.get(
                "allow_sending_without_reply"
            ) in (True, "true", "True")
            if (chat_id, reply_to) not in self.messages:
                if not allow:
                    raise _Reply(400, "Bad Request: message to be replied not found")
                reply_to = None
        self._rate_limit(chat_id)
        self._next_id[chat_id] += 1
        thread = params.get("message_thread_id")
        message = StoredMessage(
            chat_id=chat_id,
            message_id=self._next_id[chat_id],
            text=visible,
            raw_text=raw,
            parse_mode=parse_mode,
            thread_id=None if thread is None else _int(thread, "message_thread_id"),
            silent=str(params.get("disable_notification")).lower() == "true",
            reply_to=reply_to,
            reply_markup=markup,
        )
        self.messages[(chat_id, message.message_id)] = message
        self._sent.append(message)
        self._new_message.set()
        return self._message_json(message)

    def _existing(self, params: dict[str, Any], verb: str) -> StoredMessage:
        chat_id = self._chat(params)
        key = (chat_id, _int(params.get("message_id"), "message_id"))
        if key not in self.messages:
            raise _Reply(400, f"Bad Request: message to {verb} not found")
        return self.messages[key]

    def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._existing(params, "edit")
        raw, visible, parse_mode = self._text(params)
        markup = self._markup(params)
        if raw == message.raw_text and markup == message.reply_markup:
            raise _Reply(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        message.raw_text, message.text, message.parse_mode = raw, visible, parse_mode
        message.reply_markup = markup
        message.edits += 1
        return self._message_json(message)

    def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._existing(params, "edit")
        markup = self._markup(params)
        if markup == message.reply_markup:
            raise _Reply(400, "Bad Request: message is not modified")
        message.reply_markup = markup
        message.edits += 1
        return self._message_json(message)

    def _m_deleteMessage(self, params: dict[str, Any]) -> bool:
        message = self._existing(params, "delete")
        del self.messages[(message.chat_id, message.message_id)]
        return True

    def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        return True

    def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        return True

    def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        return True

    def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        return True

    async def _wait_for_updates(self, params: dict[str, Any]) -> None:
        """Long polling: hold the request until an update comes or ``timeout`` passes."""
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while not any(u["update_id"] >= offset for u in self._updates):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout=remaining)

    def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        return list(self._updates)

    def _m_getChat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        return {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"}


async def _serve(port: int) -> None:
    double = TelegramDouble()
    await double.start(port)
    print(f"Telegram Bot API double on {double.url} (token {double.token})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await double.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A strict Telegram Bot API double")
    parser.add_argument("--port", type=int, default=8081)
    asyncio.run(_serve(parser.parse_args().port))
