"""Producers' own messages: the request read, checked and keyed. Pure: no I/O.

A producer (config ``producers:``) posts a message by its own ``message_id``.
The message becomes a notification whose key is derived from (producer,
message_id), with ordinary delivery rows, so everything after accept (the
worker, the pacer, rate limits, exactly-once) is the alerts' lifecycle. What
makes a retry safe is the canonical request: the same message_id with the
same request is answered from the store and sends nothing; with another
request it is refused, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.config import ProducerConfig
from bridge.delivery import DeliveryState, Reason
from bridge.errors import PayloadError
from bridge.receipts import Receipt, iso
from bridge.recipients import check_recipient
from bridge.sandbox.formatting import (
    EntityParseError,
    TextRefused,
    checked_link,
    kept_text,
    parse_html,
)
from bridge.sources import unstorable
from bridge.store.base import MessageDelivery, MessageWait, StoredMessage
from bridge.store.sql import NOT_LINKED_ERROR
from bridge.telegram_text import telegram_escape

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
NAMESPACE = uuid.UUID("0f6b7d3e-2a55-4b8e-9c61-5d0c8a7f1e42")

MAX_MESSAGE_ID = 200
MAX_CHATS = 100
MAX_BATCH = 1000
PARSE_MODES = ("HTML", "plain")
DESTINATIONS = ("chat_id", "chats", "recipient", "labels")
#: Everything a message may carry; anything else is refused, not ignored: a
#: field the bridge does not know is a field it would silently not honour.
FIELDS = frozenset(
    {
        "message_id",
        *DESTINATIONS,
        "text",
        "parse_mode",
        "template",
        "data",
        "silent",
        "thread_id",
        "buttons",
        "disable_link_preview",
        "wait_for_link",
    }
)
#: Telegram's own limit on an inline keyboard's buttons.
MAX_BUTTONS = 100


def message_key(producer: str, message_id: str) -> uuid.UUID:
    """The message's notification key: the same (producer, message_id), the same key."""
    # The name's length first: no (producer, message_id) pair can spell another's.
    return uuid.uuid5(NAMESPACE, f"producer:{len(producer)}:{producer}:{message_id}")


def producer_line(producer: str) -> uuid.UUID:
    """The producer's ordering line: its messages reach each chat (and topic) in the
    order they were accepted, as an alert group's notifications do."""
    return uuid.uuid5(NAMESPACE, f"line:{producer}")


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """One message as asked for, checked for shape (not yet for permission)."""

    message_id: str
    #: The request without its message_id, with defaults filled in: what a
    #: replay must match.
    canonical: Mapping[str, Any]

    @property
    def chats(self) -> list[int] | None:
        chats = self.canonical.get("chats")
        return None if chats is None else list(chats)

    @property
    def recipient(self) -> str | None:
        recipient: str | None = self.canonical.get("recipient")
        return recipient

    @property
    def wait_for_link(self) -> bool:
        """To a recipient not linked yet: stored to wait for the link, not refused."""
        return bool(self.canonical.get("wait_for_link", False))

    @property
    def labels(self) -> dict[str, str] | None:
        labels = self.canonical.get("labels")
        return None if labels is None else dict(labels)

    @property
    def request(self) -> str:
        return canonical_json(self.canonical)

    @property
    def request_hash(self) -> str:
        return hashlib.sha256(self.request.encode()).hexdigest()


def canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _int(value: object, name: str) -> int:
    # bool is an int to Python, never to a producer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{name} must be an integer", status=422, field=name)
    if not -(2**63) <= value < 2**63:
        raise PayloadError(f"{name} is out of range", status=422, field=name)
    return value


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise PayloadError(f"{name} must be true or false", status=422, field=name)
    return value


def _message_id(body: Mapping[str, Any], header: str | None) -> str:
    given = body.get("message_id")
    if given is not None and not isinstance(given, str):
        raise PayloadError("message_id must be a string", status=422, field="message_id")
    if given is not None and header is not None and given != header:
        raise PayloadError(
            "message_id and the Idempotency-Key header differ; send one of them",
            status=422,
            field="message_id",
        )
    message_id = given if given is not None else header
    if not message_id:
        raise PayloadError(
            "message_id (or the Idempotency-Key header) is required: it is what makes a retry safe",
            status=400,
            field="message_id",
        )
    if len(message_id) > MAX_MESSAGE_ID:
        raise PayloadError(
            f"message_id is over {MAX_MESSAGE_ID} characters", status=422, field="message_id"
        )
    return message_id


def _destination(body: Mapping[str, Any]) -> dict[str, Any]:
    given = [name for name in DESTINATIONS if body.get(name) is not None]
    if len(given) != 1:
        raise PayloadError(
            f"give exactly one destination of {', '.join(DESTINATIONS)}"
            + (f" (got {', '.join(given)})" if given else ""),
            status=422,
            field=given[1] if len(given) > 1 else "chat_id",
        )
    (kind,) = given
    value = body[kind]
    match kind:
        case "chat_id":
            return {"chats": [_int(value, "chat_id")]}
        case "chats":
            if not isinstance(value, list) or not value or len(value) > MAX_CHATS:
                raise PayloadError(
                    f"chats must be a list of 1 to {MAX_CHATS} chat ids", status=422, field="chats"
                )
            # Each chat once, in the order first given.
            chats = (_int(v, f"chats.{i}") for i, v in enumerate(value))
            return {"chats": list(dict.fromkeys(chats))}
        case "labels":
            if (
                not isinstance(value, dict)
                or not value
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
            ):
                raise PayloadError(
                    "labels must be a non-empty object of strings", status=422, field="labels"
                )
            return {"labels": dict(value)}
    # The recipient stays in the canonical request, not the chat it resolves to:
    # a retry after the user re-linked is still the same request.
    return {"recipient": check_recipient(value)}


def _content(body: Mapping[str, Any]) -> dict[str, Any]:
    text, template = body.get("text"), body.get("template")
    if (text is None) == (template is None):
        raise PayloadError("give either text or template (with data)", status=422, field="text")
    if text is not None:
        if not isinstance(text, str):
            raise PayloadError("text must be a string", status=422, field="text")
        if body.get("data") is not None:
            raise PayloadError("data goes with a template, not text", status=422, field="data")
        parse_mode = body.get("parse_mode", "HTML")
        if parse_mode not in PARSE_MODES:
            raise PayloadError(
                f"parse_mode must be one of {', '.join(PARSE_MODES)}",
                status=422,
                field="parse_mode",
            )
        return {"text": text, "parse_mode": parse_mode}
    if not isinstance(template, str) or not _TEMPLATE_NAME.fullmatch(template):
        raise PayloadError(
            "template must be a template's name (letters, digits, - and _): "
            "messages/NAME.html.j2 in the template dirs",
            status=422,
            field="template",
        )
    if body.get("parse_mode") is not None:
        raise PayloadError(
            "a template renders HTML; parse_mode goes with text", status=422, field="parse_mode"
        )
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise PayloadError("data must be an object", status=422, field="data")
    return {"template": template, "data": data}


def _buttons(value: object) -> list[list[dict[str, str]]] | None:
    """URL buttons: a list of rows, each a list of {text, url}; a lone button object is
    a row of its own. The URL must be one Telegram takes (TDLib's check_link)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise PayloadError("buttons must be a non-empty list", status=422, field="buttons")
    rows = [item if isinstance(item, list) else [item] for item in value]
    if sum(len(row) for row in rows) > MAX_BUTTONS or not all(rows):
        raise PayloadError(
            f"buttons: 1 to {MAX_BUTTONS} buttons, no empty row", status=422, field="buttons"
        )
    checked: list[list[dict[str, str]]] = []
    for i, row in enumerate(rows):
        checked.append([])
        for j, button in enumerate(row):
            where = f"buttons.{i}.{j}"
            if (
                not isinstance(button, dict)
                or set(button) != {"text", "url"}
                or not isinstance(button["text"], str)
                or not button["text"].strip()
                or not isinstance(button["url"], str)
            ):
                raise PayloadError(
                    'a button is {"text": ..., "url": ...} with a non-empty text',
                    status=422,
                    field=where,
                )
            if "\x00" in button["url"] or not checked_link(button["url"]):
                raise PayloadError(
                    f"Telegram would refuse the button's URL {button['url']!r}",
                    status=422,
                    field=where,
                )
            checked[-1].append({"text": button["text"], "url": button["url"]})
    return checked


def _storable(value: object, where: str) -> None:
    """PayloadError 422 naming the first string anywhere in ``value`` (a key, too)
    that cannot be stored or sent as it is: bridge.sources.unstorable, the rule
    every payload obeys. JSON can spell both (``\\u0000``, ``\\ud800``)."""
    if isinstance(value, str):
        why = unstorable(value)
        if why is not None:
            raise PayloadError(f"{where or 'the body'} {why}", status=422, field=where or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            _storable(key, path)
            _storable(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable(item, f"{where}.{index}")


def parse_message(body: object, idempotency_key: str | None = None) -> MessageRequest:
    """The request's shape checked: PayloadError (400 without a message_id, else 422)."""
    if not isinstance(body, dict):
        raise PayloadError("the body must be a JSON object", status=422)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise PayloadError(f"unknown field {unknown[0]!r}", status=422, field=unknown[0])
    _storable(body, "")
    if idempotency_key is not None:
        _storable(idempotency_key, "message_id")
    message_id = _message_id(body, idempotency_key)
    thread_id = body.get("thread_id")
    canonical = {
        **_destination(body),
        **_content(body),
        "silent": _bool(body, "silent"),
        "thread_id": None if thread_id is None else _int(thread_id, "thread_id"),
        "buttons": _buttons(body.get("buttons")),
        "disable_link_preview": _bool(body, "disable_link_preview"),
        **_wait_for_link(body),
    }
    return MessageRequest(message_id, canonical)


def _wait_for_link(body: Mapping[str, Any]) -> dict[str, Any]:
    """``wait_for_link`` in the canonical request only when true: requests stored before
    it existed (and every request without it) keep their hash, so their replays stay
    replays."""
    if not _bool(body, "wait_for_link"):
        return {}
    if body.get("recipient") is None:
        raise PayloadError(
            "wait_for_link goes with recipient: only a recipient can be linked later",
            status=422,
            field="wait_for_link",
        )
    return {"wait_for_link": True}


def parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the body is not JSON: {exc}", status=400) from exc


# -- what a producer may do ---------------------------------------------------------


def authorize(producer: ProducerConfig, request: MessageRequest) -> None:
    """PayloadError 403 naming what the producer's entry does not allow."""
    chats = request.chats
    if chats is not None:
        for chat in chats:
            if chat not in producer.chats:
                raise PayloadError(
                    f"this producer may not send to chat {chat}; "
                    "add it to the producer's chats in the config",
                    status=403,
                    field="chats",
                )
    elif request.recipient is not None:
        return  # its own users: whoever it linked (resolved at accept, 409 if not linked)
    elif not producer.routes:
        raise PayloadError(
            "this producer may not send by labels; set routes: true in its config entry",
            status=403,
            field="labels",
        )


# -- what Telegram would refuse ----------------------------------------------------


def as_html(text: str, parse_mode: str) -> str:
    """What is sent, always in HTML parse mode: plain text is escaped, so Telegram
    shows it exactly as given and every message takes one path."""
    return telegram_escape(text) if parse_mode == "plain" else text


def check_text(html: str) -> None:
    """PayloadError 422 for a text Telegram would refuse, by the rules of its own
    parser (TDLib's, bridge/sandbox/formatting.py): broken HTML, nothing left to
    show, or over the length limit. Nobody's own message is cut short silently."""
    try:
        shown, entities = parse_html(html)
        kept_text(shown, entities)
    except EntityParseError as exc:
        raise PayloadError(f"Telegram would refuse the HTML: {exc}", field="text") from exc
    except TextRefused as exc:
        raise PayloadError(f"Telegram would refuse the text: {exc}", field="text") from exc


# -- replays -------------------------------------------------------------------------


def differences(stored: str, request: MessageRequest) -> list[str]:
    """The top-level fields in which ``request`` differs from the stored one."""
    before: dict[str, Any] = json.loads(stored)
    now = request.canonical
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


# -- what a producer reads back ----------------------------------------------------

#: Which state a message shows when its deliveries are in several: the one still
#: moving first, then the worst outcome.
_PRECEDENCE = (
    DeliveryState.SENDING,
    DeliveryState.RETRY,
    DeliveryState.QUEUED,
    DeliveryState.FAILED,
    DeliveryState.AMBIGUOUS,
    DeliveryState.SUPPRESSED,
    DeliveryState.DELIVERED,
)


#: A message's own status while it waits for its recipient's link: not a delivery
#: state, since no delivery exists yet (no chat is known to deliver to).
WAITING = "waiting"


def message_status(deliveries: Sequence[MessageDelivery], wait: MessageWait | None = None) -> str:
    """One status for a message: ``delivered`` only once every delivery is. A message
    that waits for its recipient's link has no delivery: ``waiting``, then ``failed``
    if it expired unlinked."""
    if not deliveries and wait is not None:
        return DeliveryState.FAILED.value if wait.expired else WAITING
    states = {d.state for d in deliveries}
    if not states:
        return DeliveryState.DELIVERED.value  # nothing was to be sent (labels no route took)
    for state in _PRECEDENCE:
        if state in states:
            return state.value
    raise AssertionError(f"unknown states {states}")  # pragma: no cover


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def delivery_json(d: MessageDelivery, recipient: str | None = None) -> dict[str, Any]:
    """A message to a recipient names the recipient, not its chat: in a private chat
    the chat id is the user's Telegram id, which the producer has no use for."""
    addressed: dict[str, Any] = (
        {"chat_id": d.chat_id} if recipient is None else {"chat_id": None, "recipient": recipient}
    )
    return {
        **addressed,
        "status": d.state.value,
        "attempts": d.attempts,
        "last_attempt_at": _iso(d.last_attempt_at),
        "delivered_at": _iso(d.delivered_at),
        "telegram_message_id": d.telegram_message_id,
        "error": d.error,
        "was_ambiguous": d.was_ambiguous,
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """What a producer reads of one receipt: whether its callback took it."""
    return {
        "event": receipt.event,
        "event_id": receipt.event_id,
        "status": receipt.state.value,
        "attempts": receipt.attempts,
        "last_error": receipt.last_error,
        "at": iso(receipt.occurred_at),
    }


def message_json(message: StoredMessage) -> dict[str, Any]:
    recipient = json.loads(message.request).get("recipient")
    answer: dict[str, Any] = {
        "message_id": message.message_id,
        "status": message_status(message.deliveries, message.wait),
        "created_at": message.created_at.isoformat(),
        "deliveries": [delivery_json(d, recipient) for d in message.deliveries],
    }
    wait = message.wait
    if wait is not None and not message.deliveries:
        # No delivery yet (or ever): when it stops waiting, and why it failed.
        answer["wait_until"] = wait.expires_at.isoformat()
        if wait.expired:
            answer["reason"] = Reason.NOT_LINKED.value
            answer["error"] = NOT_LINKED_ERROR
    return answer
