"""What the bot does with an update: commands, button presses, and who may.

Everything it touches is passed in (the Bot, the interaction store, the HTTP
session for Alertmanager, the config in force, the metrics). Who may do what,
and which Alertmanager to ask, is read from the config in force at each
update, so a reload applies at once. Every refusal is polite, logged and
counted, and changes nothing; every callback query is answered, so the
user's button never spins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
    User,
)

from bridge.alertmanager_api import AlertmanagerClient, matchers_string
from bridge.bot.keyboards import (
    SILENCE_BUTTONS,
    Acked,
    Callback,
    alert_view,
    decode,
    page_keyboard,
    undo_keyboard,
)
from bridge.config import AlertmanagerApiConfig, AllowList, BotPermissions, Config, parse_duration
from bridge.errors import AlertmanagerError, BotRefusal, Denied, Invalid
from bridge.metrics import Metrics
from bridge.store.base import AlertMessage, Interactions
from bridge.telegram_text import telegram_escape, utf16_len
from bridge.timefmt import local_time

log = logging.getLogger(__name__)

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


class BotHandler:
    def __init__(
        self,
        bot: Bot,
        store: Interactions,
        alertmanager: Callable[[AlertmanagerApiConfig], AlertmanagerClient],
        current: Callable[[], Config],
        metrics: Metrics,
    ) -> None:
        """``alertmanager`` makes the client for the Alertmanagers in force, and
        ``current`` is the config in force; both are asked at each update (a reload
        changes them)."""
        self._bot = bot
        self._store = store
        self._alertmanager = alertmanager
        self._current = current
        self._metrics = metrics

    def _allow(self) -> BotPermissions:
        bot = self._current().bot
        # A reload that removed the bot section leaves nobody allowed anything.
        return bot.allow if bot is not None else BotPermissions()

    def _time(self, moment: datetime) -> str:
        return local_time(moment, self._current().timezone, TIME_FORMAT)

    # -- entry --------------------------------------------------------------------

    async def handle(self, update: Update) -> None:
        """Act on one update (the caller made sure it is the first sight of it)."""
        if self._current().bot is None:  # switched off by a reload; gone at the next restart
            if update.callback_query is not None:
                await update.callback_query.answer("This bot is switched off.")
            return
        if update.callback_query is not None:
            await self._callback(update.callback_query)
        elif update.message is not None and (update.message.text or "").startswith("/"):
            await self._command(update.message)

    async def _command(self, message: Message) -> None:
        word, _, args = (message.text or "").partition(" ")
        command = word[1:].split("@", 1)[0].lower()
        actions = {
            "chatid": self._chatid,
            "help": self._help,
            "start": self._help,
            "alerts": self._alerts,
            "silences": self._silences,
            "ack": self._ack_command,
            "silence": self._silence_command,
            "unsilence": self._unsilence_command,
        }
        action = actions.get(command)
        if action is None:
            return  # another bot's command in a group: not ours to answer
        try:
            await action(message, args.strip())
        except BotRefusal as refusal:
            self._count(command, refusal.outcome, message.from_user, message.chat.id, str(refusal))
            await self._reply(message, str(refusal))
            return
        except AlertmanagerError as exc:
            self._count(command, "error", message.from_user, message.chat.id, str(exc))
            await self._reply(message, f"⚠️ {telegram_escape(str(exc))}")
            return
        self._count(command, "ok", message.from_user, message.chat.id)

    async def _callback(self, query: CallbackQuery) -> None:
        callback = decode(query.data or "")
        chat_id = query.message.chat.id if query.message is not None else 0
        if callback is None or query.message is None:
            await query.answer("This button is no longer valid.")
            self._count("button", "invalid", query.from_user, chat_id)
            return
        try:
            notice = await self._press(callback, query)
        except BotRefusal as refusal:
            self._count(
                f"button_{callback.verb}", refusal.outcome, query.from_user, chat_id, str(refusal)
            )
            await query.answer(str(refusal), show_alert=True)
            return
        except AlertmanagerError as exc:
            self._count(f"button_{callback.verb}", "error", query.from_user, chat_id, str(exc))
            await query.answer(f"⚠️ {str(exc)[:190]}", show_alert=True)
            return
        self._count(f"button_{callback.verb}", "ok", query.from_user, chat_id)
        await query.answer(notice)

    async def _press(self, callback: Callback, query: CallbackQuery) -> str:
        assert query.message is not None
        chat_id, user = query.message.chat.id, query.from_user
        if callback.verb == "alerts":
            self._require(self._allow().read, user, chat_id, "list alerts")
            text, markup = await self._alerts_page(callback.row_id)
            await self._bot.edit_message_text(
                text=text,
                chat_id=chat_id,
                message_id=query.message.message_id,
                parse_mode="HTML",
                reply_markup=markup,
            )
            return f"Page {callback.row_id + 1}"
        if callback.verb == "undo":
            self._require(self._allow().silence, user, chat_id, "expire silences")
            silence = await self._store.silence(callback.row_id)
            if silence is None or silence.chat_id != chat_id:
                raise Invalid("That silence is not known here.")
            await self._expire(silence.silence_id)
            await self._bot.edit_message_reply_markup(
                chat_id=chat_id, message_id=query.message.message_id, reply_markup=None
            )
            return "Silence expired"
        # The button acts on what its message shows: a thread's first message
        # shows the group's current state, whichever delivery last drew it.
        target = await self._store.message(chat_id, query.message.message_id)
        if target is None:
            raise Invalid("That alert is not known here.")
        if callback.verb == "ack":
            return await self._ack(target, user, chat_id)
        await self._silence(
            target,
            user,
            chat_id,
            SILENCE_BUTTONS[callback.duration],
            f"from Telegram, {callback.duration} button",
        )
        return f"Silenced for {callback.duration}"

    # -- who may ------------------------------------------------------------------

    def _require(self, allow: AllowList, user: User | None, chat_id: int, what: str) -> None:
        if user is None or not allow.allows(user.id, chat_id):
            raise Denied(f"Sorry, you are not allowed to {what} here.")

    def _count(
        self,
        command: str,
        outcome: str,
        user: User | None,
        chat_id: int,
        detail: str = "",
    ) -> None:
        self._metrics.bot_commands.labels(command, outcome).inc()
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(
            level,
            "bot %s by %s in chat %d: %s%s",
            command,
            user_label(user),
            chat_id,
            outcome,
            f" ({detail})" if detail else "",
            extra={"chat_id": chat_id},
        )

    # -- commands -------------------------------------------------------------------

    async def _chatid(self, message: Message, args: str) -> None:
        text = f"Chat id: <code>{message.chat.id}</code>"
        if message.is_topic_message and message.message_thread_id is not None:
            text += f"\nTopic id (thread_id): <code>{message.message_thread_id}</code>"
        await self._reply(message, text)

    async def _help(self, message: Message, args: str) -> None:
        lines = [f"/{name}: {telegram_escape(what)}" for name, what in COMMANDS]
        await self._reply(message, "\n".join(lines))

    async def _alerts(self, message: Message, args: str) -> None:
        self._require(self._allow().read, message.from_user, message.chat.id, "list alerts")
        text, markup = await self._alerts_page(0)
        await self._reply(message, text, markup)

    async def _alerts_page(self, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
        alerts = await self._api().firing_alerts()
        if not alerts:
            return "✅ Nothing is firing.", None
        pages = paginate([alert_line(a) for a in alerts])
        page = min(max(page, 0), len(pages) - 1)
        header = f"<b>{len(alerts)} firing</b>"
        if len(pages) > 1:
            header += f" · page {page + 1}/{len(pages)}"
        return f"{header}\n\n{pages[page]}", page_keyboard(page, len(pages))

    async def _silences(self, message: Message, args: str) -> None:
        self._require(self._allow().read, message.from_user, message.chat.id, "list silences")
        silences = await self._api().silences()
        if not silences:
            await self._reply(message, "No active silences.")
            return
        lines = []
        for s in silences:
            matchers = matchers_string(s.matchers)
            lines.append(
                f"🔕 <code>{telegram_escape(s.id)}</code> until {self._time(s.ends_at)}"
                f" by {telegram_escape(s.created_by[:80])}\n    "
                f"<code>{telegram_escape(matchers[:400])}</code>"
            )
        pages = paginate(lines)
        more = len(silences) - pages[0].count("🔕")
        tail = f"\n… and {more} more" if more > 0 else ""
        await self._reply(message, f"<b>{len(silences)} silences</b>\n\n{pages[0]}{tail}")

    async def _replied_alert(self, message: Message, usage: str) -> AlertMessage:
        replied = message.reply_to_message
        if replied is None:
            raise Invalid(f"Reply to an alert message with {usage}.")
        target = await self._store.message(message.chat.id, replied.message_id)
        if target is None:
            raise Invalid("That message is not an alert the bridge sent.")
        return target

    async def _ack_command(self, message: Message, args: str) -> None:
        target = await self._replied_alert(message, "/ack")
        notice = await self._ack(target, message.from_user, message.chat.id)
        await self._reply(message, telegram_escape(notice))

    async def _silence_command(self, message: Message, args: str) -> None:
        length, _, comment = args.partition(" ")
        try:
            duration = parse_duration(length) if length else None
        except ValueError:
            duration = None
        if duration is None or duration <= timedelta(0):
            raise Invalid("Usage: reply to an alert with /silence 2h [comment].")
        target = await self._replied_alert(message, "/silence 2h [comment]")
        await self._silence(
            target, message.from_user, message.chat.id, duration, comment or "from Telegram"
        )

    async def _unsilence_command(self, message: Message, args: str) -> None:
        self._require(self._allow().silence, message.from_user, message.chat.id, "expire silences")
        if not args:
            raise Invalid("Usage: /unsilence SILENCE_ID (see /silences).")
        await self._expire(args.split()[0])
        await self._reply(
            message, f"Silence <code>{telegram_escape(args.split()[0])}</code> expired."
        )

    # -- actions ----------------------------------------------------------------------

    async def _ack(self, target: AlertMessage, user: User | None, chat_id: int) -> str:
        """Ack what ``target`` shows; it and its thread's first message show the ack."""
        self._require(self._allow().ack, user, chat_id, "ack alerts")
        assert user is not None
        who = user_label(user)
        if not await self._store.ack(target, user.id, who):
            return "Already acked."
        for message_id in dict.fromkeys((target.message_id, target.anchor_message_id)):
            shown = await self._store.message(chat_id, message_id)
            if shown is not None:
                await self._show(shown)
        return f"Acked by {who}: no more reminders for this until it changes."

    async def _show(self, message: AlertMessage) -> None:
        """Edit ``message`` to what it shows now (the worker draws it the same way)."""
        config = self._current()
        acked = None
        if message.acked_by is not None and message.acked_at is not None:
            acked = Acked(message.acked_by, message.acked_at)
        text, markup = alert_view(
            message.text,
            message.delivery_id,
            resolved=message.resolved,
            acked=acked,
            buttons=config.alert_buttons,
            timezone=config.timezone,
        )
        try:
            await self._bot.edit_message_text(
                text=text,
                chat_id=message.chat_id,
                message_id=message.message_id,
                parse_mode="HTML",
                reply_markup=markup,
            )
        except TelegramBadRequest as exc:
            if "message is not modified" not in exc.message:  # it already shows this
                raise

    async def _silence(
        self,
        target: AlertMessage,
        user: User | None,
        chat_id: int,
        duration: timedelta,
        comment: str,
    ) -> None:
        self._require(self._allow().silence, user, chat_id, "silence alerts")
        api = self._api()
        labels = target.common_labels
        if api.identifying_labels:
            labels = {k: v for k, v in labels.items() if k in api.identifying_labels}
        if not labels:
            raise Invalid("This alert has no labels to silence by.")
        now = datetime.now(UTC)
        ends = now + duration
        who = user_label(user)
        silence_id, alertmanager_url = await api.create_silence(
            labels, starts_at=now, ends_at=ends, created_by=who, comment=comment
        )
        row_id = await self._store.record_silence(
            silence_id=silence_id,
            alertmanager_url=alertmanager_url,
            delivery_id=target.delivery_id,
            chat_id=chat_id,
            created_by=who,
            ends_at=ends,
        )
        link = f"{alertmanager_url}/#/silences/{silence_id}"
        await self._bot.send_message(
            chat_id=chat_id,
            text=(
                f"🔕 Silenced by {telegram_escape(who)} until {self._time(ends)}\n"
                f'<a href="{telegram_escape(link)}">{telegram_escape(silence_id)}</a>'
            ),
            parse_mode="HTML",
            reply_parameters=ReplyParameters(
                message_id=target.message_id, allow_sending_without_reply=True
            ),
            reply_markup=undo_keyboard(row_id),
        )

    async def _expire(self, silence_id: str) -> None:
        await self._api().expire_silence(silence_id)
        await self._store.mark_silence_expired(silence_id)

    def _api(self) -> AlertmanagerClient:
        settings = self._current().alertmanager
        if settings is None:
            raise Invalid("No Alertmanager is configured (the alertmanager: section).")
        return self._alertmanager(settings)

    async def _reply(
        self, message: Message, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        await self._bot.send_message(
            chat_id=message.chat.id,
            text=text,
            parse_mode="HTML",
            message_thread_id=message.message_thread_id if message.is_topic_message else None,
            reply_parameters=ReplyParameters(
                message_id=message.message_id, allow_sending_without_reply=True
            ),
            reply_markup=markup,
        )
