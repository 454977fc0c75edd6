"""What an alert message shows, and its buttons' callback data: pure, no I/O.

Telegram allows 64 bytes of callback data, so a button carries a verb and a
short row id (a delivery or a bot silence), never labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bridge.telegram_text import TELEGRAM_LIMIT, telegram_escape, utf16_len, visible_text
from bridge.timefmt import local_time

#: The silence lengths the buttons offer.
SILENCE_BUTTONS = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class Callback:
    verb: str  # "ack", "silence", "undo", "alerts"
    row_id: int  # a delivery id (ack, silence), a bot silence id (undo), a page (alerts)
    duration: str = ""  # for "silence": a key of SILENCE_BUTTONS


def encode(callback: Callback) -> str:
    parts = [callback.verb, str(callback.row_id)]
    if callback.duration:
        parts.append(callback.duration)
    data = ":".join(parts)
    assert len(data.encode()) <= 64, data
    return data


def decode(data: str) -> Callback | None:
    """The button pressed, or None for data this bridge did not write."""
    verb, _, rest = data.partition(":")
    row, _, duration = rest.partition(":")
    if verb not in ("ack", "silence", "undo", "alerts") or not row.isdigit():
        return None
    if (verb == "silence") != bool(duration) or (duration and duration not in SILENCE_BUTTONS):
        return None
    return Callback(verb, int(row), duration)


def alert_keyboard(delivery_id: int, *, acked: bool = False) -> InlineKeyboardMarkup:
    """Ack, Silence 1h, Silence 1d under a firing alert message."""
    row = [] if acked else [_button("✋ Ack", Callback("ack", delivery_id))]
    row += [
        _button(f"🔕 Silence {name}", Callback("silence", delivery_id, name))
        for name in SILENCE_BUTTONS
    ]
    return InlineKeyboardMarkup(inline_keyboard=[row])


@dataclass(frozen=True, slots=True)
class Acked:
    by: str
    at: datetime


def alert_view(
    text: str,
    delivery_id: int,
    *,
    resolved: bool,
    acked: Acked | None,
    buttons: bool,
    timezone: str,
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The text and buttons of an alert message showing one notification's state.

    A thread's first message is edited to it whenever the group's state
    changes (a reply delivered, an ack), by the worker and by the bot alike:
    one place decides what the message says and which buttons still apply.
    The buttons act on ``delivery_id``; a resolved group has none.
    """
    markup = None
    if buttons and not resolved:
        markup = alert_keyboard(delivery_id, acked=acked is not None)
    if acked is not None:
        at = local_time(acked.at, timezone, "%H:%M %Z")
        line = f"\n\n✋ <i>Acked by {telegram_escape(acked.by)} at {at}</i>"
        # No room for the line: the missing Ack button and the answer say it.
        if utf16_len(visible_text(text + line)) <= TELEGRAM_LIMIT:
            text += line
    return text, markup


def undo_keyboard(bot_silence_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button("↩️ Undo silence", Callback("undo", bot_silence_id))]]
    )


def page_keyboard(page: int, pages: int) -> InlineKeyboardMarkup | None:
    buttons = []
    if page > 0:
        buttons.append(_button("◀ Previous", Callback("alerts", page - 1)))
    if page + 1 < pages:
        buttons.append(_button("Next ▶", Callback("alerts", page + 1)))
    return InlineKeyboardMarkup(inline_keyboard=[buttons]) if buttons else None


def _button(text: str, callback: Callback) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=encode(callback))
