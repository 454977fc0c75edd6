"""The bot's own replies, through Telegram's flood control.

Deliveries book their rate-limit slots ahead; a reply to a person pressing a
button cannot wait in that line, and a 429 must not lose it either. So the
bot's session waits Telegram's ``retry_after`` and asks again, a few times,
as long as the wait is short enough for a person still looking at the chat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods.base import TelegramType

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import Response, TelegramMethod

log = logging.getLogger(__name__)


class WaitOnFloodControl(BaseRequestMiddleware):
    def __init__(self, *, attempts: int = 3, longest_wait: float = 30.0) -> None:
        self._attempts = attempts
        self._longest_wait = longest_wait

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        for attempt in range(1, self._attempts + 1):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if attempt == self._attempts or exc.retry_after > self._longest_wait:
                    raise
                log.warning(
                    "bot %s: Telegram asks to wait %ds; then trying again",
                    type(method).__name__,
                    exc.retry_after,
                )
                await asyncio.sleep(exc.retry_after)
        raise AssertionError("unreachable: the last attempt returns or raises")
