"""Wire the stages into running processes: receiver, worker, or both.

Every dependency is built here and passed down; nothing below reaches for a
global. Shutdown on SIGTERM/SIGINT: stop accepting HTTP, stop taking queue
messages, let the deliveries in hand be recorded and acked, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette

from bridge.config import Config, LiveConfig, Reloaded, load_config, plan_reload
from bridge.errors import BridgeError, ConfigError
from bridge.metrics import Metrics
from bridge.ops import Reload, create_ops_app
from bridge.queue.amqp import AmqpQueue
from bridge.queue.base import Queue
from bridge.queue.local import LocalQueue
from bridge.ratelimit import RateLimiter
from bridge.receiver import ReceiverDeps, Rules, create_app
from bridge.scheduler import Scheduler
from bridge.shards import Rebalancer
from bridge.store import PostgresStore
from bridge.store.base import Store

if TYPE_CHECKING:
    from bridge.bot.startup import BotParts
    from bridge.telegram import TelegramSender

# aiogram costs about 150 MB of RSS at import (its pydantic models), so the
# modules that use it are imported only by processes that send or run the
# bot: a receiver without a bot section stays small.

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def open_store(config: Config) -> Store:
    """PostgreSQL when database_url is set; else the standalone SQLite file."""
    if config.database_url:
        return await PostgresStore.connect(config.database_url)
    from bridge.store.sqlite import SqliteStore

    return await SqliteStore.open(config.sqlite_path)


async def _open_queue(config: Config) -> Queue:
    if config.amqp_url:
        return await AmqpQueue.connect(config.amqp_url, config.amqp)
    return LocalQueue(prefetch=config.amqp.prefetch, delivery_limit=config.amqp.delivery_limit)


def reloader(
    path: Path,
    live: LiveConfig,
    deps: ReceiverDeps | None,
    prepare: Sequence[Callable[[Config, Config], Awaitable[None]]] = (),
) -> Reload:
    """Re-read the config file and put it in force, or change nothing and say why.

    Everything reads ``live`` at the moment it acts, so swapping it applies
    the new config everywhere at once; the receiver's compiled rules are
    swapped in the same step. Settings marked RESTART keep their running
    values, and the answer names them. ``prepare`` (old, new) runs first:
    what must be told elsewhere (Telegram's webhook) before it takes effect.
    """

    one_at_a_time = asyncio.Lock()  # SIGHUP and POST /-/reload may come together

    async def reload() -> Reloaded:
        async with one_at_a_time:
            try:
                reloaded = plan_reload(live(), load_config(path))
                rules = Rules.from_config(reloaded.config) if deps is not None else None
                for step in prepare:
                    await step(live(), reloaded.config)
            except BridgeError as exc:
                log.error("config reload failed; the previous config stays in force: %s", exc)
                raise
            live.replace(reloaded.config)
            if deps is not None and rules is not None:
                deps.rules = rules
            level = logging.WARNING if reloaded.needs_restart else logging.INFO
            log.log(level, "config reloaded from %s: %s", path, reloaded.summary())
            return reloaded

    return reload


def _reload_on_sighup(reload: Reload, background: set[asyncio.Task[None]]) -> None:
    async def quietly() -> None:
        with contextlib.suppress(BridgeError):  # logged by reload(); the old config stays
            await reload()

    def on_sighup() -> None:
        task = asyncio.create_task(quietly())
        background.add(task)
        task.add_done_callback(background.discard)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)


async def run_until_signalled(
    config: Config, *, receiver: bool, worker: bool, config_path: Path | None = None
) -> None:
    """The CLI's entry: run until SIGTERM or SIGINT; SIGHUP reloads the config."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(config, receiver=receiver, worker=worker, stop=stop, config_path=config_path)


async def run(
    config: Config,
    *,
    receiver: bool,
    worker: bool,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    config_path: Path | None = None,
) -> None:
    """Run until ``stop`` is set, then shut down without losing what is in hand."""
    if config.standalone and not (receiver and worker):
        raise ConfigError(
            "standalone mode (no database_url and amqp_url) runs the receiver and the "
            "worker in one process over one SQLite file: use `alertbridge serve`, or set "
            "database_url and amqp_url to run them apart"
        )
    metrics = metrics if metrics is not None else Metrics()
    live = LiveConfig(config)

    store = await open_store(config)
    queue: Queue | None = None
    sender: TelegramSender | None = None
    bot_parts: BotParts | None = None
    try:
        applied = await store.migrate()
        if applied:
            log.info("database schema: applied %s", ", ".join(applied))
        queue = await _open_queue(config)
        tasks: list[asyncio.Task[None]] = []
        background: set[asyncio.Task[None]] = set()

        if worker:
            from bridge.telegram import TelegramSender, create_bot
            from bridge.worker import Worker

            sender = TelegramSender(create_bot(config.telegram), live)
            # Built even while off: a reload may turn the limits on.
            limiter = RateLimiter(lambda: live().rate_limits, time.monotonic)
            handler = Worker(store, sender, live, metrics, limiter=limiter)
            scheduler = Scheduler(store, queue, live, metrics)
            if config.standalone:  # one worker owns every chat
                await queue.consume(handler.handle)
                log.info("standalone: state in %s, queue in process", config.sqlite_path)
            else:
                worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
                rebalancer = Rebalancer(worker_id, config.amqp.shards, store, queue, limiter)
                await queue.consume(handler.handle, first=await rebalancer.first_share())
                tasks.append(asyncio.create_task(rebalancer.run(stop), name="shards"))
                log.info("worker consuming %s", config.amqp.queue)
            # An in-process queue's wake-ups died with the last process: catch up.
            scheduler_run = scheduler.run(stop, catch_up_first=config.standalone)
            tasks.append(asyncio.create_task(scheduler_run, name="scheduler"))

        app: Starlette
        deps: ReceiverDeps | None = None
        if receiver:
            deps = ReceiverDeps(
                rules=Rules.from_config(config), store=store, publisher=queue, metrics=metrics
            )
            if config.bot is not None:
                from bridge.bot.startup import start_bot

                bot_parts = await start_bot(live, store, metrics, stop)
                deps.extra_routes = bot_parts.routes
                tasks.extend(bot_parts.tasks)
        reload = None
        if config_path is not None:
            prepare = [bot_parts.reconfigure] if bot_parts is not None else []
            reload = reloader(config_path, live, deps, prepare)
            _reload_on_sighup(reload, background)
        if deps is not None:
            deps.reload = reload
            app = create_app(deps)
        else:  # a worker alone still answers probes and scrapes, and reloads
            app = create_ops_app(store, lambda: queue.connected, metrics, reload=reload)
        server = _Server(
            uvicorn.Config(
                app,
                host=config.listen_host,
                port=config.listen_port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        tasks.append(asyncio.create_task(server.serve(), name="http"))
        role = "receiver" if receiver else "worker /healthz /readyz /metrics"
        log.info("%s listening on %s", role, config.listen)

        # Everything loaded at start-up (aiogram alone is ~100k objects) lives as
        # long as the process: out of the collector's sight, a full collection
        # takes milliseconds instead of stalling the loop for ~140 ms.
        gc.freeze()
        await stop.wait()
        log.info("shutting down: finishing deliveries in hand")
        server.should_exit = True
        if worker:
            await queue.stop_consuming()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if bot_parts is not None:
            for close in bot_parts.closers:
                await close()
        if sender is not None:
            await sender.close()
        if queue is not None:
            await queue.close()
        await store.close()
        log.info("stopped")
