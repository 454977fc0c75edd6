"""Send through aiogram and say what happened, in the terms the worker acts on.

The classification is the heart of exactly-once: anything that may have
reached Telegram is never retried blindly. Only an error that proves the
message was not accepted (a parsed error answer, or a connection that was
never made) is safe to retry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
)
from aiogram.methods import EditMessageReplyMarkup, EditMessageText, SendMessage
from aiogram.methods.base import Response
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
)
from aiohttp import ClientConnectorError

from bridge.bot.keyboards import alert_view
from bridge.config import Config, TelegramConfig
from bridge.delivery import Delivery, Reason
from bridge.logs import delivery_fields
from bridge.telegram_text import html_to_plain

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: int
    plain_text: bool = False
    # The message it replies to; None for a stand-alone message (which then
    # becomes its group's thread anchor).
    reply_to: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Telegram certainly does not have the message; try again after ``delay`` (None: backoff)."""

    reason: Reason
    detail: str
    delay: timedelta | None = None  # for RATE_LIMITED: Telegram's retry_after


@dataclass(frozen=True, slots=True)
class Failed:
    """Retrying cannot help (blocked, kicked, chat gone): terminal."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """The request was written but no answer was read: Telegram may or may not have it."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Migrated:
    new_chat_id: int


Outcome = Sent | Retry | Failed | Ambiguous | Migrated

# aiogram parses every answer through ``Response[<the method's result type>]``.
# pydantic caches such generic classes only weakly, so each full garbage
# collection dropped them and the next send rebuilt one (3.6 ms): 11 % of a
# worker's CPU in the profile. Holding them here makes every lookup a cache hit.
_RESPONSE_MODELS = tuple(
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (SendMessage, EditMessageText, EditMessageReplyMarkup)
)


def create_bot(settings: TelegramConfig) -> Bot:
    """A Bot talking to ``api_url``: Telegram, a local Bot API server, or a test double alike."""
    session = AiohttpSession(
        api=TelegramAPIServer.from_base(settings.api_url),
        timeout=settings.request_timeout.total_seconds(),
    )
    return Bot(settings.token, session=session)


def _bad_request_reason(error: TelegramBadRequest) -> Reason:
    """Telegram names a 400's cause only in its description: read it here, once."""
    text = error.message.lower()
    if "can't parse entities" in text:
        return Reason.PARSE_ERROR
    if "chat not found" in text:
        return Reason.CHAT_NOT_FOUND
    if "message to be replied not found" in text:
        return Reason.REPLY_TARGET_GONE
    return Reason.BAD_REQUEST


class TelegramSender:
    def __init__(self, bot: Bot, current: Callable[[], Config]) -> None:
        """``current``: the config in force, asked at each send (a reload changes it)."""
        self._bot = bot
        self._current = current

    def _view(self, delivery: Delivery) -> tuple[str, InlineKeyboardMarkup | None]:
        """Ack and Silence buttons while the group fires (when the bot is on).

        A notification just delivered has not been acked yet: a reminder of
        an acked one is suppressed before it gets here.
        """
        config = self._current()
        return alert_view(
            delivery.text,
            delivery.id,
            resolved=delivery.resolves_group,
            acked=None,
            buttons=config.alert_buttons,
            timezone=config.timezone,
        )

    def _keyboard(self, delivery: Delivery) -> InlineKeyboardMarkup | None:
        if delivery.own_message:  # a producer's message: its own URL buttons, no alert ones
            return url_keyboard(delivery.buttons)
        return self._view(delivery)[1]

    async def send(self, delivery: Delivery) -> Outcome:
        """Send as a reply to the group's thread anchor when there is one."""
        outcome = await self._send_formatted(delivery, delivery.anchor_message_id)
        if (
            delivery.anchor_message_id is not None
            and isinstance(outcome, Failed)
            and outcome.reason is Reason.REPLY_TARGET_GONE
        ):
            # Someone deleted the group's first message: Telegram refused the
            # reply outright, so a stand-alone send is safe and opens a new thread.
            log.warning(
                "delivery %d chat %d: thread message %d is gone; sending stand-alone",
                delivery.id,
                delivery.chat_id,
                delivery.anchor_message_id,
                extra=delivery_fields(delivery),
            )
            return await self._send_formatted(delivery, None)
        return outcome

    async def _send_formatted(self, delivery: Delivery, reply_to: int | None) -> Outcome:
        if delivery.plain_text:
            return await self._attempt(delivery, plain=True, reply_to=reply_to)
        outcome = await self._attempt(delivery, plain=False, reply_to=reply_to)
        if isinstance(outcome, Failed) and outcome.reason is Reason.PARSE_ERROR:
            # The rendered HTML was refused outright, so nothing was sent:
            # resending the visible text once is safe and loses no alert.
            log.warning(
                "delivery %d chat %d: Telegram refused the HTML (%s); resending as plain text",
                delivery.id,
                delivery.chat_id,
                outcome.detail,
                extra=delivery_fields(delivery),
            )
            return await self._attempt(delivery, plain=True, reply_to=reply_to)
        return outcome

    async def _attempt(self, delivery: Delivery, *, plain: bool, reply_to: int | None) -> Outcome:
        text = html_to_plain(delivery.text) if plain else delivery.text
        try:
            message = await self._bot.send_message(
                chat_id=delivery.chat_id,
                text=text,
                parse_mode=None if plain else "HTML",
                message_thread_id=delivery.thread_id,
                disable_notification=delivery.silent or None,
                reply_parameters=None if reply_to is None else ReplyParameters(message_id=reply_to),
                reply_markup=self._keyboard(delivery),
                link_preview_options=(
                    LinkPreviewOptions(is_disabled=True) if delivery.disable_link_preview else None
                ),
            )
        except Exception as exc:  # noqa: BLE001 - classify() decides; nothing escapes unclassified
            return classify(exc)
        return Sent(message_id=message.message_id, plain_text=plain, reply_to=reply_to)

    async def edit_anchor(self, delivery: Delivery, message_id: int) -> bool:
        """Show the group's current state (``delivery``) on its thread anchor; idempotent.

        "message is not modified" is success: the anchor already shows it.
        The buttons act on the latest state, and go when the group resolves.
        """
        chat_id = delivery.chat_id
        text, markup = self._view(delivery)
        try:
            await self._bot.edit_message_text(
                text=text,
                chat_id=chat_id,
                message_id=message_id,
                parse_mode="HTML",
                reply_markup=markup,
            )
        except TelegramBadRequest as exc:
            if not_modified(exc):
                return True
            self._edit_failed(delivery, message_id, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - an edit is cosmetic; the delivery stands
            self._edit_failed(delivery, message_id, exc)
            return False
        return True

    def _edit_failed(self, delivery: Delivery, message_id: int, exc: Exception) -> None:
        log.warning(
            "delivery %d chat %d: cannot edit thread message %d: %s",
            delivery.id,
            delivery.chat_id,
            message_id,
            exc,
            extra=delivery_fields(delivery),
        )

    async def close(self) -> None:
        await self._bot.session.close()


def classify(exc: BaseException) -> Outcome:
    """Map an exception from a send to what the worker must do next."""
    if isinstance(exc, TelegramRetryAfter):
        return Retry(Reason.RATE_LIMITED, exc.message, delay=timedelta(seconds=exc.retry_after))
    if isinstance(exc, TelegramMigrateToChat):
        return Migrated(new_chat_id=exc.migrate_to_chat_id)
    if isinstance(exc, TelegramForbiddenError):
        return Failed(Reason.FORBIDDEN, exc.message)
    if isinstance(exc, TelegramBadRequest):
        return Failed(_bad_request_reason(exc), exc.message)
    if isinstance(exc, TelegramNetworkError):
        if _never_connected(exc):
            return Retry(Reason.CONNECT, f"cannot connect to the Bot API: {exc.message}")
        return Ambiguous(Reason.TIMEOUT, f"no answer after the request was sent: {exc.message}")
    if isinstance(exc, ClientDecodeError):
        return Ambiguous(Reason.UNDECODABLE, f"undecodable answer from the Bot API: {exc.message}")
    if isinstance(exc, TelegramAPIError):
        # 5xx, 401/404 (a wrong token or api_url affects every delivery: keep
        # them queued and loud rather than fail them all), 409 and the rest:
        # Telegram answered, so it did not take the message.
        return Retry(Reason.SERVER_ERROR, f"{type(exc).__name__}: {exc.message}")
    # Anything else (a bug, an aiohttp error past the request) may have
    # happened after the request was written.
    return Ambiguous(Reason.UNEXPECTED, f"{type(exc).__name__}: {exc}")


def not_modified(error: TelegramBadRequest) -> bool:
    """An edit to what the message already shows: success, as edits are idempotent."""
    return "message is not modified" in error.message


def _never_connected(error: TelegramNetworkError) -> bool:
    """Whether aiohttp failed to open the connection, so no byte of the request left.

    aiogram raises TelegramNetworkError inside its ``except ClientError``;
    from 3.25 it chains the cause (``raise ... from e``), before that only
    Python's implicit ``__context__`` holds it. Both are read, so a session
    or version that does not chain still has a refused connection retried.
    """
    cause = error.__cause__ if error.__cause__ is not None else error.__context__
    return isinstance(cause, ClientConnectorError)


def url_keyboard(buttons: str | None) -> InlineKeyboardMarkup | None:
    """A producer's URL buttons (stored as JSON rows of {text, url}, checked at accept)."""
    if buttons is None:
        return None
    rows = json.loads(buttons)
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b["text"], url=b["url"]) for b in row] for row in rows
        ]
    )
