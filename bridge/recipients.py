"""Recipients: a producer addresses its own users, not chat ids. Pure: no I/O.

A producer asks for a link for one of its users (``POST /v1/recipients/{recipient}/link``):
a Telegram deep link ``https://t.me/<bot>?start=<token>``. The user opens it and
presses Start; Telegram sends the bot ``/start <token>`` from the user's private
chat, and the bot records (producer, recipient) → that chat. From then on the
producer's messages with ``recipient`` go there, until the user sends /stop.

The token is the only secret: it is random (``secrets.token_urlsafe``), used
once, expires, and only its SHA-256 is stored, so neither a read of the table
nor a log line can link anyone.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import datetime
from typing import Any

from bridge.errors import PayloadError
from bridge.store.base import RecipientState

MAX_RECIPIENT = 200
#: Telegram's rule for a /start parameter: A-Z, a-z, 0-9, _ and -, up to 64 characters.
START_PARAMETER = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Random bytes in a token: 32 bytes are 43 URL-safe characters, inside Telegram's 64.
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh one-time token, valid as a Telegram start parameter."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a token: a lookup key that cannot be used as a link."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_token(args: str) -> str | None:
    """The token in ``/start <args>``, if ``args`` can be one (else None: plain /start)."""
    token = args.strip()
    return token if START_PARAMETER.fullmatch(token) else None


def link_url(bot_username: str, token: str) -> str:
    return f"https://t.me/{bot_username}?start={token}"


def check_recipient(value: object, field: str = "recipient") -> str:
    """A producer's user id: a string of 1 to MAX_RECIPIENT characters, printable.

    Control characters, and lone surrogates (which no store can hold as text),
    are refused: the id is shown in logs and stored as text."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_RECIPIENT:
        raise PayloadError(
            f"recipient must be a string of 1 to {MAX_RECIPIENT} characters: "
            "your own id of the user",
            status=422,
            field=field,
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise PayloadError("recipient must not contain control characters", status=422, field=field)
    return value


def not_linked(recipient: str, *, bot_configured: bool = True) -> PayloadError:
    """409 for a message to a recipient who has not opened a link (or sent /stop).
    Without a bot nobody can link, so "wait_for_link" cannot help either."""
    if not bot_configured:
        return PayloadError(
            f"recipient {recipient!r} is not linked to a Telegram chat, and no bot is "
            "configured (a bot: section) to receive the /start that links one",
            status=409,
            field="recipient",
        )
    return PayloadError(
        f"recipient {recipient!r} is not linked to a Telegram chat: send the user a link "
        f"from POST /v1/recipients/{{recipient}}/link and wait until they press Start, "
        'or send the message with "wait_for_link": true to have it wait for the link',
        status=409,
        field="recipient",
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def link_json(recipient: str, url: str, expires_at: datetime) -> dict[str, Any]:
    return {"recipient": recipient, "link": url, "expires_at": expires_at.isoformat()}


def recipient_json(state: RecipientState) -> dict[str, Any]:
    """What a producer reads of its recipient. The chat id is left out: in a private
    chat it is the user's Telegram user id, which the producer does not need (it
    addresses the recipient) and should not collect."""
    return {
        "recipient": state.recipient,
        "linked": state.linked,
        "linked_at": _iso(state.linked_at),
    }
