"""A Telegram Bot API double: real HTTP on 127.0.0.1, as strict as Telegram and no stricter.

The bridge reaches it through the same `telegram.api_url` setting a user sets
for a local Bot API server, so no code path inside the bridge is mocked.

The reference is Telegram's own code: the Bot API server (telegram-bot-api,
``Client.cpp``) and TDLib, which it runs. The HTML parse mode is TDLib's
``parse_html`` (see :mod:`bridge.sandbox.formatting`); the text is cleaned and
trimmed as TDLib does and limited to 4096 code points of what is left; the
parameters are read as the Bot API reads them (``td::to_integer``, JSON values
as their JSON text), and every refusal carries Telegram's description. Any
input gets an answer: a 4xx for what Telegram refuses, never a 5xx unless a
test scripted one. Faults are scripted per method: 5xx, 429, a connection
dropped after the message was accepted, a hang.

Run it alone: ``python -m bridge.sandbox.botapi --port 8081``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.sandbox.formatting import (
    SOURCE_LIMIT,
    Entity,
    EntityParseError,
    TextRefused,
    is_url,
    kept_text,
    parse_html,
    to_integer,
    utf16_len,
)

__all__ = [
    "EntityParseError",
    "StoredMessage",
    "TelegramDouble",
    "parse_telegram_html",
    "utf16_len",
]

# The Bot API's own limits and answers, from telegram-bot-api Client.cpp.
LONG_POLL_MAX_TIMEOUT = 50
QUERY_ID_INVALID = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)


def parse_telegram_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The text and Bot API entities of ``text`` in HTML parse mode, or EntityParseError.

    As parsed, before Telegram cleans and trims it (that is :func:`kept_text`).
    """
    shown, entities = parse_html(text)
    return shown, [e.to_bot_api() for e in entities]


@dataclass
class Call:
    method: str
    params: dict[str, str]
    at: float
    response: dict[str, Any] | None = None


@dataclass
class StoredMessage:
    chat_id: int
    message_id: int
    text: str  # as Telegram keeps it: parsed, cleaned, trimmed
    raw_text: str  # as sent
    parse_mode: str | None
    thread_id: int | None = None
    silent: bool = False
    reply_to: int | None = None
    reply_markup: Any = None
    edits: int = 0
    date: int = field(default_factory=lambda: int(time.time()))
    entities: list[dict[str, Any]] = field(default_factory=list)


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


@dataclass
class _Done:
    """A successful answer with the ``description`` the Bot API adds to some."""

    result: Any
    description: str


def _bad(description: str) -> _Reply:
    return _Reply(400, f"Bad Request: {description}")


def _integer(params: dict[str, str], name: str, default: int = 0) -> int:
    """Client::get_integer_arg without clamping: td::to_integer, or ``default`` if absent."""
    value = params.get(name, "")
    return to_integer(value, 64) if value else default


def _to_bool(value: str) -> bool:
    """Client::to_bool."""
    return value.strip().lower() in ("true", "yes", "1")


def _json(params: dict[str, str], name: str, what: str) -> Any:
    """The JSON value of parameter ``name``; None when absent. Refused: can't parse ``what``."""
    raw = params.get(name, "")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _bad(f"can't parse {what} JSON object") from None


def _reject_unencodable(params: dict[str, str]) -> None:
    # Strings from JSON may hold lone surrogates (\ud800): not UTF-8, which TDLib refuses.
    for value in params.values():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad("strings must be encoded in UTF-8") from None


#: Larger than any request the Bot API takes, so its own limits answer first.
MAX_REQUEST = 64 * 1024 * 1024


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
        self._sent_times: dict[int, deque[float]] = defaultdict(deque)
        self._bot_times: deque[float] = deque()
        self._new_message = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._callback_queries: set[str] = set()
        # setWebhook's URL and secret; getUpdates is refused while a URL is set.
        self.webhook_url = ""
        self.webhook_secret = ""

    # -- lifecycle -------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """The Bot API: ``/bot<token>/<method>``."""
        app.router.add_route("*", "/bot{token}/{method}", self._handle)

    async def start(self, port: int = 0) -> None:
        """Serve the Bot API alone (``bridge/sandbox/server.py`` serves it with the page)."""
        app = web.Application(client_max_size=MAX_REQUEST)
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        host, bound = self._runner.addresses[0][:2]  # port 0: the one the system chose
        self.url = f"http://{host}:{bound}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
        # Telegram's query ids are 64-bit numbers, sent as strings.
        query_id = str(10**15 + self._update_id())
        self._callback_queries.add(query_id)
        update = {
            "update_id": self._last_update_id,
            "callback_query": {
                "id": query_id,
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

    async def _params(self, request: web.Request) -> dict[str, str]:
        """The parameters as the Bot API reads them (td::HttpReader): the URL's
        query, then the body's; the first of a name wins. In a JSON body a
        string is its text and any other value its JSON text."""
        params: dict[str, str] = {}
        for key, value in request.query.items():
            params.setdefault(key, value)
        if request.content_type == "application/json":
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _bad("can't parse parameter value") from None
                if not isinstance(body, dict):
                    raise _bad("JSON object expected")
                for key, value in body.items():
                    text = value if isinstance(value, str) else json.dumps(value)
                    params.setdefault(str(key), text)
        elif request.method == "POST":
            form = await request.post()
            for key, item in form.items():
                if isinstance(item, str):  # files are for methods the double has not
                    params.setdefault(key, item)
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        call = Call(method, {}, time.monotonic())
        self.calls.append(call)
        try:
            call.params = await self._params(request)
        except _Reply as reply:
            return self._answer(call, reply)
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.match_info["token"] != self.token:
            return self._answer(call, _Reply(401, "Unauthorized"))
        fault = self._faults[method].popleft() if self._faults[method] else None
        if fault is not None and fault.kind == "error":
            return self._answer(call, _Reply(fault.status, fault.description, fault.parameters))
        if method.lower() == "getupdates" and not self.webhook_url:
            await self._wait_for_updates(call.params)
        result = self.answer(method, call.params)
        if isinstance(result, _Reply):
            return self._answer(call, result)
        if fault is not None and fault.kind == "drop":
            # Accepted and stored, then the connection dies before the answer.
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        return self._answer(call, result)

    def answer(self, method: str, params: dict[str, str]) -> Any:
        """What the Bot API answers to ``method`` with ``params``: the result, or a
        _Reply for a refusal. Method names are case-insensitive, as there."""
        handler = self._methods().get(method.lower())
        if handler is None:
            return _Reply(404, "Not Found: method not found")
        try:
            _reject_unencodable(params)
            return handler(params)
        except _Reply as reply:
            return reply

    def _methods(self) -> dict[str, Callable[[dict[str, str]], Any]]:
        return {
            name[3:].lower(): getattr(self, name) for name in dir(self) if name.startswith("_m_")
        }

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
        if isinstance(result, _Done):
            call.response = {"ok": True, "result": result.result, "description": result.description}
        else:
            call.response = {"ok": True, "result": result}
        return web.json_response(call.response)

    # -- methods ---------------------------------------------------------------

    def _m_getMe(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "id": to_integer(self.token.split(":")[0], 64),
            "is_bot": True,
            "first_name": "Alertbridge Test",
            "username": "alertbridge_test_bot",
        }

    def _chat(self, params: dict[str, str]) -> int:
        raw = params.get("chat_id", "")
        chat_id = to_integer(raw, 64)
        if str(chat_id) != raw or chat_id in self._missing:
            raise _bad("chat not found")
        if chat_id in self._blocked:
            raise _Reply(403, self._blocked[chat_id])
        if chat_id in self._migrated:
            raise _Reply(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[chat_id]},
            )
        return chat_id

    def _source(self, params: dict[str, str]) -> tuple[str, str | None, list[Entity], str]:
        """The Bot API's checks of ``text`` and its parsing: (raw, parse mode, entities, text)."""
        raw = params.get("text", "")
        if not raw:
            raise _bad("message text is empty")
        if len(raw.encode("utf-8")) > SOURCE_LIMIT:
            raise _bad("text is too long")
        parse_mode = params.get("parse_mode", "").lower()
        if parse_mode in ("", "none"):
            return raw, None, [], raw
        if parse_mode != "html":
            # MarkdownV2 and Markdown are Telegram's too; the double only speaks HTML.
            raise _bad("unsupported parse_mode")
        try:
            shown, entities = parse_html(raw)
        except EntityParseError as exc:
            raise _bad(f"can't parse entities: {exc}") from exc
        return raw, "HTML", entities, shown

    @staticmethod
    def _kept(shown: str, entities: list[Entity]) -> tuple[str, list[dict[str, Any]]]:
        """TDLib's checks of the parsed text: what Telegram keeps, or its refusal."""
        try:
            text, kept = kept_text(shown, entities)
        except TextRefused as exc:
            message = str(exc)
            raise _bad(message[0].lower() + message[1:]) from exc
        return text, [e.to_bot_api() for e in kept]

    def _markup(self, params: dict[str, str]) -> Any:
        """Client::get_reply_markup, for the inline keyboards the bridge sends."""
        markup = _json(params, "reply_markup", "reply keyboard markup")
        if markup is None and "reply_markup" not in params:
            return None
        if not isinstance(markup, dict):
            raise _bad("object expected as reply markup")
        rows = markup.get("inline_keyboard", [])
        if not isinstance(rows, list):
            raise _bad('field "inline_keyboard" must be of type Array')
        for row in rows:
            if not isinstance(row, list):
                raise _bad(
                    'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
                )
            for button in row:
                if not isinstance(button, dict):
                    raise _bad(
                        "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
                    )
                if not isinstance(button.get("text"), str | int | float):
                    raise _bad("can't parse inline keyboard button: Can't find field \"text\"")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _bad("BUTTON_DATA_INVALID")
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
        if m.entities:
            out["entities"] = m.entities
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

    def _reply_to(self, params: dict[str, str], chat_id: int) -> int | None:
        reply = _json(params, "reply_parameters", "reply parameters")
        if reply is not None and not isinstance(reply, dict):
            raise _bad("object expected as reply parameters")
        reply = reply or {}
        raw = reply.get("message_id", params.get("reply_to_message_id"))
        if raw is None:
            return None
        reply_to = to_integer(str(raw), 32)
        allow = _to_bool(str(reply.get("allow_sending_without_reply", ""))) or _to_bool(
            params.get("allow_sending_without_reply", "")
        )
        if (chat_id, reply_to) not in self.messages:
            if not allow:
                raise _bad("message to be replied not found")
            return None
        return reply_to

    def _m_sendMessage(self, params: dict[str, str]) -> dict[str, Any]:
        raw, parse_mode, entities, shown = self._source(params)
        markup = self._markup(params)
        chat_id = self._chat(params)
        reply_to = self._reply_to(params, chat_id)
        text, kept = self._kept(shown, entities)
        self._rate_limit(chat_id)
        self._next_id[chat_id] += 1
        thread = params.get("message_thread_id")
        message = StoredMessage(
            chat_id=chat_id,
            message_id=self._next_id[chat_id],
            text=text,
            raw_text=raw,
            parse_mode=parse_mode,
            thread_id=None if thread is None else to_integer(thread, 32),
            silent=_to_bool(params.get("disable_notification", "")),
            reply_to=reply_to,
            reply_markup=markup,
            entities=kept,
        )
        self.messages[(chat_id, message.message_id)] = message
        self._sent.append(message)
        self._new_message.set()
        return self._message_json(message)

    def _existing(self, params: dict[str, str], verb: str) -> StoredMessage:
        chat_id = self._chat(params)
        key = (chat_id, _integer(params, "message_id"))
        if key not in self.messages:
            raise _bad(f"message to {verb} not found")
        return self.messages[key]

    def _m_editMessageText(self, params: dict[str, str]) -> dict[str, Any]:
        raw, parse_mode, entities, shown = self._source(params)
        markup = self._markup(params)
        message = self._existing(params, "edit")
        text, kept = self._kept(shown, entities)
        if (text, kept, markup) == (message.text, message.entities, message.reply_markup):
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        message.raw_text, message.text, message.parse_mode = raw, text, parse_mode
        message.entities = kept
        message.reply_markup = markup
        message.edits += 1
        return self._message_json(message)

    def _m_editMessageReplyMarkup(self, params: dict[str, str]) -> dict[str, Any]:
        markup = self._markup(params)
        message = self._existing(params, "edit")
        if markup == message.reply_markup:
            raise _bad("message is not modified")
        message.reply_markup = markup
        message.edits += 1
        return self._message_json(message)

    def _m_deleteMessage(self, params: dict[str, str]) -> bool:
        message = self._existing(params, "delete")
        del self.messages[(message.chat_id, message.message_id)]
        return True

    def _m_answerCallbackQuery(self, params: dict[str, str]) -> bool:
        # Client.cpp reads the id with td::to_integer: a missing or foreign id is
        # 0 or unknown, and the server answers QUERY_ID_INVALID.
        query_id = _integer(params, "callback_query_id")
        if str(query_id) not in self._callback_queries:
            raise _Reply(400, QUERY_ID_INVALID)
        return True

    def _m_setMyCommands(self, params: dict[str, str]) -> bool:
        # Client::get_bot_commands: no "commands" is an empty list, which clears
        # them; TDLib's set_commands checks each one, the server its characters.
        commands = _json(params, "commands", "commands")
        if commands is None:
            commands = [] if "commands" not in params or not params["commands"] else None
        if not isinstance(commands, list):
            raise _bad("expected an Array of BotCommand")
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("can't parse BotCommand: expected an Object")
            fields: dict[str, str] = {}
            for name in ("command", "description"):
                value = command.get(name)
                if value is None:
                    raise _bad(f"can't parse BotCommand: Can't find field \"{name}\"")
                if not isinstance(value, str | int | float) or isinstance(value, bool):
                    raise _bad(f'can\'t parse BotCommand: Field "{name}" must be of type String')
                fields[name] = str(value).strip(" \t\r\n\0\v")
            name = fields["command"].removeprefix("/")
            if not name:
                raise _bad("command must be non-empty")
            if len(name) > 32:
                raise _bad("command length must not exceed 32")
            if not fields["description"]:
                raise _bad("command description must be non-empty")
            if len(fields["description"]) > 256:
                raise _bad("command description length must not exceed 256")
            if not all(ch in "abcdefghijklmnopqrstuvwxyz0123456789_" for ch in name):
                raise _bad("BOT_COMMAND_INVALID")
        language = params.get("language_code", "")
        if language and not (len(language) == 2 and language.isascii() and language.islower()):
            raise _bad("invalid language code specified")
        return True

    def _m_setWebhook(self, params: dict[str, str]) -> _Done:
        # Client::process_set_webhook_query: no url is deleteWebhook.
        url = params.get("url", "")
        if not url:
            return self._m_deleteWebhook(params)
        if not is_url(url):
            raise _bad("invalid webhook URL specified")
        secret = params.get("secret_token", "")
        if len(secret) > 256:
            raise _bad("secret token is too long")
        if any(not (ch.isascii() and (ch.isalnum() or ch in "-_")) for ch in secret):
            raise _bad("secret token contains unallowed characters")
        if (url, secret) == (self.webhook_url, self.webhook_secret):
            return _Done(True, "Webhook is already set")
        self.webhook_url, self.webhook_secret = url, secret
        return _Done(True, "Webhook was set")

    def _m_deleteWebhook(self, params: dict[str, str]) -> _Done:
        if not self.webhook_url:
            return _Done(True, "Webhook is already deleted")
        self.webhook_url = self.webhook_secret = ""
        return _Done(True, "Webhook was deleted")

    def _m_getWebhookInfo(self, params: dict[str, str]) -> dict[str, Any]:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": 0}

    def _poll_window(self, params: dict[str, str]) -> tuple[int, float]:
        offset = to_integer(params.get("offset", ""), 32)
        timeout = min(max(to_integer(params.get("timeout", ""), 32), 0), LONG_POLL_MAX_TIMEOUT)
        return offset, float(timeout)

    async def _wait_for_updates(self, params: dict[str, str]) -> None:
        """Long polling: hold the request until an update comes or ``timeout`` passes."""
        offset, timeout = self._poll_window(params)
        deadline = time.monotonic() + timeout
        while not any(u["update_id"] >= offset for u in self._updates):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout=remaining)

    def _m_getUpdates(self, params: dict[str, str]) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise _Reply(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset, _ = self._poll_window(params)
        limit = min(max(to_integer(params.get("limit", "") or "100", 32), 1), 100)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        return list(self._updates[:limit])

    def _m_getChat(self, params: dict[str, str]) -> dict[str, Any]:
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
