"""What the bot makes of an update: which command or button, and who may.

The actions themselves are ``actions.py``'s, what the bot says is
``formatting.py``'s. Everything it touches is passed in (the Bot, the
interaction store, a maker of Alertmanager clients, the config in force, the
metrics). Who may do what,
and which Alertmanager to ask, is read from the config in force at each
update, so a reload applies at once. Every refusal is polite, logged and
counted, and changes nothing; every callback query is answered, so the
user's button never spins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from aiogram import Bot
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
    User,
)

from bridge.alertmanager_api import AlertmanagerClient
from bridge.bot.actions import AlertActions
from bridge.bot.formatting import (
    alerts_page,
    chat_id_text,
    help_text,
    linked_text,
    silences_text,
    unlinked_text,
    user_label,
)
from bridge.bot.keyboards import (
    SILENCE_BUTTONS,
    Callback,
    decode,
)
from bridge.config import AlertmanagerApiConfig, AllowList, BotPermissions, Config, parse_duration
from bridge.errors import AlertmanagerError, BotRefusal, Denied, Invalid
from bridge.metrics import Metrics
from bridge.recipients import start_token, token_hash
from bridge.store.base import AlertMessage, Interactions
from bridge.telegram_text import telegram_escape

log = logging.getLogger(__name__)


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
        self._current = current
        self._metrics = metrics
        self._actions = AlertActions(bot, store, alertmanager, current)

    def _allow(self) -> BotPermissions:
        bot = self._current().bot
        # A reload that removed the bot section leaves nobody allowed anything.
        return bot.allow if bot is not None else BotPermissions()

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
            "start": self._start,
            "stop": self._stop,
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
            text, markup = alerts_page(await self._actions.api().firing_alerts(), callback.row_id)
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
            await self._actions.expire(silence.silence_id)
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
        self._require(self._allow().silence, user, chat_id, "silence alerts")
        await self._actions.silence(
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
        topic = message.message_thread_id if message.is_topic_message else None
        await self._reply(message, chat_id_text(message.chat.id, topic))

    async def _help(self, message: Message, args: str) -> None:
        await self._reply(message, help_text())

    async def _start(self, message: Message, args: str) -> None:
        """``/start TOKEN``: a recipient's link opened (bridge/recipients.py); the
        token is used once, and (producer, recipient) → this chat. Plain /start: help."""
        token = start_token(args)
        if token is None:
            await self._help(message, args)
            return
        if message.chat.type != "private":
            raise Invalid("Open the link in a private chat with the bot.")
        producers = self._current().producers or {}
        wanting = {name for name, p in producers.items() if p.callback_url is not None}
        linked = await self._store.consume_link(
            token_hash(token), message.chat.id, receipts_for=wanting
        )
        if linked is None:
            self._metrics.recipient_links.labels("", "refused").inc()
            raise Invalid(
                "This link was already used or has expired. Ask for a new one where you got it."
            )
        self._metrics.recipient_links.labels(linked.producer, "linked").inc()
        log.info(
            "recipient %r of producer %s linked to chat %d%s",
            linked.recipient,
            linked.producer,
            linked.chat_id,
            f" (was chat {linked.replaced_chat_id})" if linked.replaced_chat_id else "",
            extra={"chat_id": linked.chat_id},
        )
        if linked.released:
            # Their deliveries are stored and due: the scheduler publishes them.
            self._metrics.recipient_links.labels(linked.producer, "released_message").inc(
                len(linked.released)
            )
            log.info(
                "producer %s: %d messages that waited for recipient %r go to chat %d: %s",
                linked.producer,
                len(linked.released),
                linked.recipient,
                linked.chat_id,
                ", ".join(repr(m) for m in linked.released),
                extra={"chat_id": linked.chat_id},
            )
        await self._reply(message, linked_text(linked.producer))

    async def _stop(self, message: Message, args: str) -> None:
        """``/stop`` in a private chat: every recipient linked to it unlinked. In a
        group it is left alone (recipients link private chats; another bot's /stop)."""
        if message.chat.type != "private":
            return
        unlinked = await self._store.unlink_chat(message.chat.id)
        for state in unlinked:
            self._metrics.recipient_links.labels(state.producer, "unlinked").inc()
            log.info(
                "recipient %r of producer %s unlinked from chat %d by /stop",
                state.recipient,
                state.producer,
                message.chat.id,
                extra={"chat_id": message.chat.id},
            )
        await self._reply(message, unlinked_text([s.producer for s in unlinked]))

    async def _alerts(self, message: Message, args: str) -> None:
        self._require(self._allow().read, message.from_user, message.chat.id, "list alerts")
        text, markup = alerts_page(await self._actions.api().firing_alerts(), 0)
        await self._reply(message, text, markup)

    async def _silences(self, message: Message, args: str) -> None:
        self._require(self._allow().read, message.from_user, message.chat.id, "list silences")
        silences = await self._actions.api().silences()
        await self._reply(message, silences_text(silences, self._current().timezone))

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
        self._require(self._allow().silence, message.from_user, message.chat.id, "silence alerts")
        await self._actions.silence(
            target, message.from_user, message.chat.id, duration, comment or "from Telegram"
        )

    async def _unsilence_command(self, message: Message, args: str) -> None:
        self._require(self._allow().silence, message.from_user, message.chat.id, "expire silences")
        if not args:
            raise Invalid("Usage: /unsilence SILENCE_ID (see /silences).")
        await self._actions.expire(args.split()[0])
        await self._reply(
            message, f"Silence <code>{telegram_escape(args.split()[0])}</code> expired."
        )

    async def _ack(self, target: AlertMessage, user: User | None, chat_id: int) -> str:
        self._require(self._allow().ack, user, chat_id, "ack alerts")
        assert user is not None  # _require refuses an update without a user
        return await self._actions.ack(target, user, chat_id)

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
