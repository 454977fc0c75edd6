"""What the bot says, as Telegram HTML. Pure: data in, text out; everything a user
can put in (labels, names, comments) escaped; pages kept under Telegram's limit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiogram.types import InlineKeyboardMarkup, User

from bridge.alertmanager_api import Silence, matchers_string
from bridge.bot.keyboards import page_keyboard
from bridge.telegram_text import telegram_escape, utf16_len
from bridge.timefmt import local_time

#: (command, what it does) for /help and setMyCommands.
COMMANDS = [
    ("alerts", "what Alertmanager has firing"),
    ("silences", "the active silences"),
    ("ack", "reply to an alert: acknowledge it, no more reminders"),
    ("silence", "reply to an alert: /silence 2h [comment]"),
    ("unsilence", "/unsilence ID: expire a silence"),
    ("chatid", "this chat's id and topic id, for the config"),
    ("help", "what the bot can do"),
]
#: Room left under Telegram's 4096 for a page of /alerts or /silences.
PAGE_BUDGET = 3500


def user_label(user: User | None) -> str:
    if user is None:
        return "someone"
    if user.username:
        return f"@{user.username}"
    return f"{user.full_name} ({user.id})"


def paginate(lines: Sequence[str], budget: int = PAGE_BUDGET) -> list[str]:
    """Lines packed into pages of at most ``budget`` UTF-16 units of visible text.

    Lines are HTML whose visible text is never longer than the HTML itself,
    so measuring the HTML is a safe upper bound.
    """
    pages: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        cost = utf16_len(line) + 1
        if current and size + cost > budget:
            pages.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += cost
    if current:
        pages.append("\n".join(current))
    return pages


def alert_line(alert: dict[str, Any]) -> str:
    labels: dict[str, str] = alert.get("labels", {})
    name = labels.get("alertname", "alert")
    rest = ", ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )
    severity = labels.get("severity")
    summary = alert.get("annotations", {}).get("summary", "")
    line = f"🔥 <b>{telegram_escape(name[:120])}</b>"
    if severity:
        line += f" · {telegram_escape(severity[:40])}"
    if rest:
        line += f" <code>{telegram_escape(rest[:300])}</code>"
    if summary:
        line += f"\n    {telegram_escape(summary[:300])}"
    return line


#: How times are written in the bot's answers, in the config's ``timezone``.
TIME_FORMAT = "%Y-%m-%d %H:%M %Z"


def when(moment: datetime, timezone: str) -> str:
    """A time in a bot answer, in the config's ``timezone``."""
    return local_time(moment, timezone, TIME_FORMAT)


def help_text() -> str:
    return "\n".join(f"/{name}: {telegram_escape(what)}" for name, what in COMMANDS)


def linked_text(producer: str) -> str:
    """What a user sees after opening a recipient's link and pressing Start."""
    return (
        f"✅ Linked: messages from <b>{telegram_escape(producer)}</b> will come to this "
        "chat.\nSend /stop to stop them."
    )


def unlinked_text(producers: Sequence[str]) -> str:
    """What /stop answers: whose messages stop, or that nothing was linked."""
    if not producers:
        return "Nothing is linked to this chat."
    names = ", ".join(f"<b>{telegram_escape(p)}</b>" for p in dict.fromkeys(producers))
    return f"Stopped: no more messages from {names} in this chat."


def chat_id_text(chat_id: int, topic_id: int | None) -> str:
    text = f"Chat id: <code>{chat_id}</code>"
    if topic_id is not None:
        text += f"\nTopic id (thread_id): <code>{topic_id}</code>"
    return text


def alerts_page(
    alerts: Sequence[dict[str, Any]], page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    """One page of what is firing, and the buttons to turn pages."""
    if not alerts:
        return "✅ Nothing is firing.", None
    pages = paginate([alert_line(a) for a in alerts])
    page = min(max(page, 0), len(pages) - 1)
    header = f"<b>{len(alerts)} firing</b>"
    if len(pages) > 1:
        header += f" · page {page + 1}/{len(pages)}"
    return f"{header}\n\n{pages[page]}", page_keyboard(page, len(pages))


def silences_text(silences: Sequence[Silence], timezone: str) -> str:
    """The active silences as Alertmanager writes their matchers, first page only."""
    if not silences:
        return "No active silences."
    lines = [
        f"🔕 <code>{telegram_escape(s.id)}</code> until {when(s.ends_at, timezone)}"
        f" by {telegram_escape(s.created_by[:80])}\n    "
        f"<code>{telegram_escape(matchers_string(s.matchers)[:400])}</code>"
        for s in silences
    ]
    pages = paginate(lines)
    more = len(silences) - pages[0].count("🔕")
    tail = f"\n… and {more} more" if more > 0 else ""
    return f"<b>{len(silences)} silences</b>\n\n{pages[0]}{tail}"


def silenced_text(who: str, ends: datetime, link: str, silence_id: str, timezone: str) -> str:
    return (
        f"🔕 Silenced by {telegram_escape(who)} until {when(ends, timezone)}\n"
        f'<a href="{telegram_escape(link)}">{telegram_escape(silence_id)}</a>'
    )
