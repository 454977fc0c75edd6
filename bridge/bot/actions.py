"""What the bot does to alerts, for a user already allowed to: ack one, silence it in
Alertmanager, expire a silence, and redraw an alert message as it stands now.
Who may, and which command or button asked, is ``commands.py``'s business."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import ReplyParameters, User

from bridge.alertmanager_api import AlertmanagerClient
from bridge.bot.formatting import silenced_text, user_label
from bridge.bot.keyboards import Acked, alert_view, undo_keyboard
from bridge.config import AlertmanagerApiConfig, Config
from bridge.errors import Invalid
from bridge.store.base import AlertMessage, Interactions
from bridge.telegram import not_modified


class AlertActions:
    def __init__(
        self,
        bot: Bot,
        store: Interactions,
        alertmanager: Callable[[AlertmanagerApiConfig], AlertmanagerClient],
        current: Callable[[], Config],
    ) -> None:
        """``alertmanager`` makes the client for the Alertmanagers in force, and
        ``current`` is the config in force; both are asked at each action."""
        self._bot = bot
        self._store = store
        self._alertmanager = alertmanager
        self._current = current

    def api(self) -> AlertmanagerClient:
        settings = self._current().alertmanager
        if settings is None:
            raise Invalid("No Alertmanager is configured (the alertmanager: section).")
        return self._alertmanager(settings)

    async def ack(self, target: AlertMessage, user: User, chat_id: int) -> str:
        """Ack what ``target`` shows; it and its thread's first message show the ack."""
        who = user_label(user)
        if not await self._store.ack(target, user.id, who):
            return "Already acked."
        for message_id in dict.fromkeys((target.message_id, target.anchor_message_id)):
            shown = await self._store.message(chat_id, message_id)
            if shown is not None:
                await self.show(shown)
        return f"Acked by {who}: no more reminders for this until it changes."

    async def show(self, message: AlertMessage) -> None:
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
            if not not_modified(exc):
                raise

    async def silence(
        self,
        target: AlertMessage,
        user: User | None,
        chat_id: int,
        duration: timedelta,
        comment: str,
    ) -> None:
        """A real silence in Alertmanager from the alert's identifying labels, announced
        in a reply with an Undo button."""
        api = self.api()
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
            text=silenced_text(who, ends, link, silence_id, self._current().timezone),
            parse_mode="HTML",
            reply_parameters=ReplyParameters(
                message_id=target.message_id, allow_sending_without_reply=True
            ),
            reply_markup=undo_keyboard(row_id),
        )

    async def expire(self, silence_id: str) -> None:
        await self.api().expire_silence(silence_id)
        await self._store.mark_silence_expired(silence_id)
