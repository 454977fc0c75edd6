"""Inline buttons and their callback data: pure, no I/O.

Telegram allows 64 bytes of callback data, so a button carries a verb and a
short row id (a delivery or a bot silence), never labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

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
