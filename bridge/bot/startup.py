"""Wiring the bot into a running process: commands at Telegram, the webhook
route or the poller, and what to close at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand
from starlette.routing import Route as HttpRoute

from bridge.alertmanager_api import AlertmanagerClient
from bridge.bot.commands import COMMANDS, BotHandler
from bridge.bot.flood import WaitOnFloodControl
from bridge.bot.updates import ALLOWED_UPDATES, poll, webhook_route
from bridge.config import Config
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.telegram import create_bot

log = logging.getLogger(__name__)


@dataclass
class BotParts:
    """The bot's running pieces, to serve and to close."""

    routes: list[HttpRoute]
    tasks: list[asyncio.Task[None]]
    closers: list[Callable[[], Awaitable[None]]]


async def start_bot(
    config: Config, store: Store, metrics: Metrics, stop: asyncio.Event
) -> BotParts:
    """Commands and buttons: the Telegram webhook route, or a poller task."""
    assert config.bot is not None
    settings = config.bot
    bot = create_bot(config.telegram)
    bot.session.middleware(WaitOnFloodControl())
    http = aiohttp.ClientSession()
    parts = BotParts([], [], [bot.session.close, http.close])
    alertmanager = (
        AlertmanagerClient(config.alertmanager, http) if config.alertmanager is not None else None
    )
    interactions = store.interactions()
    handler = BotHandler(bot, interactions, alertmanager, settings, config.alertmanager, metrics)
    try:
        if settings.set_commands:
            await bot.set_my_commands(
                [BotCommand(command=name, description=what) for name, what in COMMANDS]
            )
        if settings.updates == "webhook":
            assert settings.webhook_secret is not None  # the config requires it
            parts.routes.append(webhook_route(bot, handler, interactions, settings.webhook_secret))
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
