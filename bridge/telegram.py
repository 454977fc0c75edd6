"""Send through aiogram and say what happened, in the terms the worker acts on.

The classification is the heart of exactly-once: anything that may have
reached Telegram is never retried blindly. Only an error that proves the
message was not accepted (a parsed error answer, or a connection that was
never made) is safe to retry.
"""

from __future__ import annotations

import logging
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
from aiohttp import ClientConnectorError

from bridge.config import TelegramConfig
from bridge.models import Delivery
from bridge.render import html_to_plain

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: int
    plain_text: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """Telegram certainly does not have the message; try again after ``delay`` (None: backoff)."""

    reason: str
    delay: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """Retrying cannot help (blocked, kicked, chat gone): terminal."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """The request was written but no answer was read: Telegram may or may not have it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Migrated:
    new_chat_id: int


Outcome = Sent | Retry | Failed | Ambiguous | Migrated


def create_bot(settings: TelegramConfig) -> Bot:
    """A Bot talking to ``api_url``: Telegram, a local Bot API server, or a test double alike."""
    session = AiohttpSession(
        api=TelegramAPIServer.from_base(settings.api_url),
        timeout=settings.request_timeout.total_seconds(),
    )
    return Bot(settings.token, session=session)


def _is_parse_error(error: TelegramBadRequest) -> bool:
    return "can't parse entities" in error.message.lower()


class TelegramSender:
    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.plain_text:
            return await self._attempt(delivery, plain=True)
        outcome = await self._attempt(delivery, plain=False)
        if isinstance(outcome, Failed) and outcome.reason.startswith("can't parse"):
            # The rendered HTML was refused outright, so nothing was sent:
            # resending the visible text once is safe and loses no alert.
            log.warning(
                "delivery %d chat %d: Telegram refused the HTML (%s); resending as plain text",
                delivery.id,
                delivery.chat_id,
                outcome.reason,
            )
            return await self._attempt(delivery, plain=True)
        return outcome

    async def _attempt(self, delivery: Delivery, *, plain: bool) -> Outcome:
        text = html_to_plain(delivery.text) if plain else delivery.text
        try:
            message = await self._bot.send_message(
                chat_id=delivery.chat_id,
                text=text,
                parse_mode=None if plain else "HTML",
                message_thread_id=delivery.thread_id,
                disable_notification=delivery.silent or None,
            )
        except Exception as exc:  # noqa: BLE001 - classify() decides; nothing escapes unclassified
            return classify(exc)
        return Sent(message_id=message.message_id, plain_text=plain)

    async def close(self) -> None:
        await self._bot.session.close()


def classify(exc: BaseException) -> Outcome:
    """Map an exception from a send to what the worker must do next."""
    if isinstance(exc, TelegramRetryAfter):
        return Retry(f"429 {exc.message}", delay=timedelta(seconds=exc.retry_after))
    if isinstance(exc, TelegramMigrateToChat):
        return Migrated(new_chat_id=exc.migrate_to_chat_id)
    if isinstance(exc, TelegramForbiddenError):
        return Failed(f"403 {exc.message}")
    if isinstance(exc, TelegramBadRequest):
        if _is_parse_error(exc):
            return Failed(f"can't parse entities: {exc.message}")
        return Failed(f"400 {exc.message}")
    if isinstance(exc, TelegramNetworkError):
        if isinstance(exc.__cause__, ClientConnectorError):
            return Retry(f"cannot connect to the Bot API: {exc.message}")
        return Ambiguous(f"no answer after the request was sent: {exc.message}")
    if isinstance(exc, ClientDecodeError):
        return Ambiguous(f"undecodable answer from the Bot API: {exc.message}")
    if isinstance(exc, TelegramAPIError):
        # 5xx, 401/404 (a wrong token or api_url affects every delivery: keep
        # them queued and loud rather than fail them all), 409 and the rest:
        # Telegram answered, so it did not take the message.
        return Retry(f"{type(exc).__name__}: {exc.message}")
    # Anything else (a bug, an aiohttp error past the request) may have
    # happened after the request was written.
    return Ambiguous(f"unexpected {type(exc).__name__}: {exc}")
