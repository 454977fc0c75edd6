"""How updates reach the bot: Telegram's webhook, or long polling.

Either way each update is acted on once: its ``update_id`` is recorded in
the store first, and a repeat (Telegram retrying a webhook it thinks failed,
a poller restarted before its offset was confirmed) does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable

from aiogram import Bot
from aiogram.types import Update
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.bot.commands import BotHandler
from bridge.errors import StoreUnavailable
from bridge.store.base import Interactions, Store

log = logging.getLogger(__name__)

#: The updates the bot acts on; Telegram sends nothing else.
ALLOWED_UPDATES = ["message", "callback_query"]
POLL_SECONDS = 20


async def process(update: Update, handler: BotHandler, store: Interactions) -> bool:
    """Act on ``update`` unless it was seen before; False for a repeat."""
    if not await store.first_sight(update.update_id):
        log.info("telegram update %d seen before; ignored", update.update_id)
        return False
    try:
        await handler.handle(update)
    except Exception:  # a Telegram or Alertmanager call failed mid-way
        # What happened before the failure stays done; acting again could
        # create a second silence. Log it: the user sees no answer and retries.
        log.exception("telegram update %d: handling failed", update.update_id)
    return True


def webhook_route(
    bot: Bot, handler: BotHandler, store: Interactions, secret: Callable[[], str | None]
) -> Route:
    """``POST /telegram/webhook``, checked against the secret given to setWebhook.

    ``secret``: the one in force, asked at each request (a reload changes it).
    """

    async def telegram_webhook(request: Request) -> Response:
        expected = secret()
        given = request.headers.get("x-telegram-bot-api-secret-token", "").encode()
        if expected is None or not hmac.compare_digest(given, expected.encode()):
            log.warning("telegram webhook with a wrong or missing secret token; refused")
            return JSONResponse({"status": "error", "error": "wrong secret token"}, 401)
        try:
            update = Update.model_validate_json(await request.body(), context={"bot": bot})
        except ValidationError as exc:
            return JSONResponse({"status": "error", "error": f"not an update: {exc}"}, 400)
        try:
            await process(update, handler, store)
        except StoreUnavailable as exc:
            # Nothing was recorded: Telegram retries the webhook later.
            log.error("telegram update %d not handled: %s", update.update_id, exc)
            return JSONResponse({"status": "error", "error": str(exc)}, 503)
        return JSONResponse({"status": "ok"})

    return Route("/telegram/webhook", telegram_webhook, methods=["POST"])


async def poll(
    bot: Bot,
    handler: BotHandler,
    interactions: Interactions,
    store: Store,
    stop: asyncio.Event,
) -> None:
    """Long-poll getUpdates until ``stop``, while holding the bot's poller lock.

    Telegram allows one getUpdates caller per bot; with several bridge
    processes, the one holding the database lock polls and the others wait.
    """
    while not stop.is_set():
        try:
            async with store.poller_lock() as held:
                if not held:
                    await _sleep(stop, 15)
                    continue
                log.info("polling Telegram for updates")
                await bot.delete_webhook(drop_pending_updates=False)
                await _poll_until(bot, handler, interactions, stop)
        except StoreUnavailable as exc:
            log.warning("bot poller: %s; trying again in 5s", exc)
            await _sleep(stop, 5)


async def _poll_until(
    bot: Bot, handler: BotHandler, interactions: Interactions, stop: asyncio.Event
) -> None:
    offset: int | None = None
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            fetch = asyncio.create_task(
                bot.get_updates(
                    offset=offset,
                    timeout=POLL_SECONDS,
                    allowed_updates=ALLOWED_UPDATES,
                    request_timeout=POLL_SECONDS + 10,
                )
            )
            done, _ = await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
                return
            try:
                updates = fetch.result()
            except StoreUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - Telegram unreachable: wait, ask again
                log.warning("getUpdates failed: %s; asking again in 5s", exc)
                await _sleep(stop, 5)
                continue
            for update in updates:
                await process(update, handler, interactions)
                offset = update.update_id + 1
    finally:
        stopping.cancel()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
