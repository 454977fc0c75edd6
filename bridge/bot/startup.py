"""Wiring the bot into a running process: commands at Telegram, the webhook
route or the poller, and what to close at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import aiohttp
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand
from starlette.routing import Route as HttpRoute

from bridge.alertmanager_api import AlertmanagerClient
from bridge.bot.commands import BotHandler
from bridge.bot.flood import WaitOnFloodControl
from bridge.bot.formatting import COMMANDS
from bridge.bot.updates import ALLOWED_UPDATES, poll, webhook_route
from bridge.config import BotConfig, Config
from bridge.errors import ConfigError, TelegramUnavailable
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.telegram import create_bot

log = logging.getLogger(__name__)


@dataclass
class BotParts:
    """The bot's running pieces, to serve, to reconfigure and to close."""

    routes: list[HttpRoute]
    tasks: list[asyncio.Task[None]]
    closers: list[Callable[[], Awaitable[None]]]
    # Called by a reload before the new config is put in force (old, new):
    # what Telegram must be told first. Raises to refuse the reload.
    reconfigure: Callable[[Config, Config], Awaitable[None]]
    # The bot's @username, from getMe (asked once, then remembered): what a
    # recipient's link opens. Raises TelegramUnavailable.
    username: Callable[[], Awaitable[str]]


async def start_bot(
    current: Callable[[], Config], store: Store, metrics: Metrics, stop: asyncio.Event
) -> BotParts:
    """Commands and buttons: the Telegram webhook route, or a poller task.

    ``current``: the config in force; the bot reads it at every update.
    """
    config = current()
    assert config.bot is not None
    settings = config.bot
    bot = create_bot(config.telegram)
    bot.session.middleware(WaitOnFloodControl())
    http = aiohttp.ClientSession()

    async def reconfigure(old: Config, new: Config) -> None:
        await _register_webhook(bot, old.bot, new.bot)

    async def username() -> str:
        try:
            me = await bot.me()  # aiogram keeps the answer: one getMe per process
        except TelegramAPIError as exc:
            raise TelegramUnavailable(
                f"Telegram did not tell the bot's username (getMe): {exc}"
            ) from exc
        if not me.username:  # every bot has one; a user account would not
            raise TelegramUnavailable("getMe answered without a username")
        return me.username

    parts = BotParts([], [], [bot.session.close, http.close], reconfigure, username)
    interactions = store.interactions()
    handler = BotHandler(
        bot, interactions, partial(AlertmanagerClient, session=http), current, metrics
    )

    def secret() -> str | None:
        bot_settings = current().bot
        return bot_settings.webhook_secret if bot_settings is not None else None

    try:
        await username()  # learnt now, so a link is not the first to wait for it
    except TelegramUnavailable as exc:
        log.warning("bot: %s; links will ask again", exc)
    try:
        if settings.set_commands:
            await bot.set_my_commands(
                [BotCommand(command=name, description=what) for name, what in COMMANDS]
            )
        if settings.updates == "webhook":
            parts.routes.append(webhook_route(bot, handler, interactions, secret))
            if settings.webhook_url:
                await bot.set_webhook(
                    settings.webhook_url,
                    secret_token=settings.webhook_secret,
                    allowed_updates=ALLOWED_UPDATES,
                )
    except TelegramAPIError as exc:  # the bridge still delivers; commands may not work
        log.error("bot setup at Telegram failed (commands may not work): %s", exc)
    if settings.updates == "polling":
        parts.tasks.append(
            asyncio.create_task(poll(bot, handler, interactions, store, stop), name="bot-poller")
        )
    log.info("bot: updates by %s", settings.updates)
    return parts


async def _register_webhook(bot: Bot, old: BotConfig | None, new: BotConfig | None) -> None:
    """A new webhook URL or secret is given to Telegram before the bridge expects it."""
    if old is None or new is None or new.updates != "webhook" or not new.webhook_url:
        return
    if (old.webhook_url, old.webhook_secret) == (new.webhook_url, new.webhook_secret):
        return
    try:
        await bot.set_webhook(
            new.webhook_url, secret_token=new.webhook_secret, allowed_updates=ALLOWED_UPDATES
        )
    except TelegramAPIError as exc:
        raise ConfigError(
            f"bot.webhook_url/webhook_secret: Telegram did not take the new webhook ({exc}); "
            "try the reload again"
        ) from exc
    log.info("bot: webhook registered at Telegram with the reloaded URL and secret")
