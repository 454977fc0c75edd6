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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette

from bridge.config import Config, load_config
from bridge.errors import BridgeError, ConfigError
from bridge.metrics import Metrics
from bridge.ops import create_ops_app
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


# Settings a running process cannot swap: connections and the worker's own
# delivery settings are built once at start.
_NEEDS_RESTART = ("telegram", "database_url", "amqp_url", "sqlite_path", "amqp", "listen")


def reloader(path: Path, deps: ReceiverDeps) -> Callable[[], Awaitable[str]]:
    """Re-read the config file and swap the receiver's rules, or keep the old ones."""

    async def reload() -> str:
        try:
            config = load_config(path)
            rules = Rules.from_config(config)
        except BridgeError as exc:
            log.error("config reload failed; the previous config stays in force: %s", exc)
            raise
        old = deps.rules.config
        deps.rules = rules
        later = [key for key in _NEEDS_RESTART if getattr(config, key) != getattr(old, key)]
        if config.delivery != old.delivery:
            later.append("delivery (worker side)")
        summary = "routes, templates, sources and receiver settings reloaded"
        if later:
            summary += f"; changes to {', '.join(later)} take effect at the next restart"
        log.info("config reloaded from %s: %s", path, summary)
        return summary

    return reload


async def _quiet_reload(reload: Callable[[], Awaitable[str]]) -> None:
    with contextlib.suppress(BridgeError):  # logged by reload(); the old config stays
        await reload()


async def run_until_signalled(
    config: Config,
    *,
    receiver: bool,
    worker: bool,
    config_path: Path | None = None,
    listening: Callable[[str], None] | None = None,
) -> None:
    """The CLI's entry: run until SIGTERM or SIGINT; SIGHUP reloads the config."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(
        config,
        receiver=receiver,
        worker=worker,
        stop=stop,
        config_path=config_path,
        listening=listening,
    )


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound and listening before the server starts: the address
    it reports is the one that serves (port 0: the one the system chose), and a
    connection made as soon as it is reported waits in the backlog."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BridgeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run(
    config: Config,
    *,
    receiver: bool,
    worker: bool,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    config_path: Path | None = None,
    listening: Callable[[str], None] | None = None,
) -> None:
    """Run until ``stop`` is set, then shut down without losing what is in hand.

    ``listening`` is told the address HTTP is served on, once it is.
    """
    if config.standalone and not (receiver and worker):
        raise ConfigError(
            "standalone mode (no database_url and amqp_url) runs the receiver and the "
            "worker in one process over one SQLite file: use `alertbridge serve`, or set "
            "database_url and amqp_url to run them apart"
        )
    metrics = metrics if metrics is not None else Metrics()
    # Bound first, so a port in use stops the process before anything starts.
    listener = _listen(config.listen_host, config.listen_port)
    try:
        store = await open_store(config)
    except BaseException:
        listener.close()
        raise
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

            buttons = config.bot is not None and config.bot.buttons
            sender = TelegramSender(create_bot(config.telegram), buttons=buttons)
            limits = config.rate_limits
            limiter = RateLimiter(limits, time.monotonic) if limits.enabled else None
            handler = Worker(
                store,
                sender,
                config.delivery,
                metrics,
                limiter=limiter,
                max_inline_wait=limits.max_inline_wait,
                digest_after=limits.digest_after,
            )
            scheduler = Scheduler(store, queue, config.delivery, metrics)
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
        if receiver:
            deps = ReceiverDeps(
                rules=Rules.from_config(config), store=store, publisher=queue, metrics=metrics
            )
            if config.bot is not None:
                from bridge.bot.startup import start_bot

                bot_parts = await start_bot(config, store, metrics, stop)
                deps.extra_routes = bot_parts.routes
                tasks.extend(bot_parts.tasks)
            if config_path is not None:
                deps.reload = reloader(config_path, deps)
                reload = deps.reload

                def on_sighup() -> None:
                    task = asyncio.create_task(_quiet_reload(reload))
                    background.add(task)
                    task.add_done_callback(background.discard)

                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
            app = create_app(deps)
        else:  # a worker alone still answers probes and scrapes
            app = create_ops_app(store, lambda: queue.connected, metrics)
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
        tasks.append(asyncio.create_task(server.serve(sockets=[listener]), name="http"))
        role = "receiver" if receiver else "worker /healthz /readyz /metrics"
        address = _address(listener)
        log.info("%s listening on %s", role, address)
        if listening is not None:
            listening(address)

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
        listener.close()  # if the server never took it
        log.info("stopped")
