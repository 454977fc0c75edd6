"""Wire the stages into running processes: receiver, worker, or both.

Every dependency is built here and passed down; nothing below reaches for a
global. Shutdown on SIGTERM/SIGINT: stop accepting HTTP, stop taking queue
messages, let the deliveries in hand be recorded and acked, then close.

A process started while PostgreSQL or RabbitMQ is down waits for it with
capped backoff, logging each attempt, instead of exiting: meanwhile its port
answers /healthz 200, /readyz 503 naming what it waits for, and 503 to any
webhook, so senders retry. It becomes ready when the dependency appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.backoff import jittered
from bridge.clock import SystemClock
from bridge.config import Config, LiveConfig, Reloaded, plan_reload
from bridge.config_file import load_config
from bridge.errors import BridgeError, ConfigError, QueueUnavailable, StoreUnavailable
from bridge.ingress_consumer import IngressConsumer
from bridge.metrics import Dependency, Metrics, WaitStage
from bridge.ops import Reload, create_ops_app
from bridge.pacer import Pacer
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
    from bridge.outbox import AiohttpPoster
    from bridge.telegram import TelegramSender

# aiogram costs about 150 MB of RSS at import (its pydantic models), so the
# modules that use it are imported only by processes that send or run the
# bot: a receiver without a bot section stays small.

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Pauses between attempts to reach a store or broker that is down at start
#: (seconds): quick to notice a dependency that is just restarting, capped so
#: a long outage costs one cheap attempt every few seconds.
START_BACKOFF_INITIAL = 0.5
START_BACKOFF_MAX = 15.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Starting:
    """The process's HTTP face: while it waits for its dependencies, alive but not
    ready; once they are there, the real application (``app``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.app: ASGIApp | None = None
        self.waiting_for = "starting"
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        response: Response
        if scope["path"] == "/healthz":
            response = JSONResponse({"status": "ok"})
        elif scope["path"] == "/metrics":
            response = Response(
                generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST
            )
        else:
            # A webhook too: 503, never 4xx, so Alertmanager keeps it and retries.
            response = JSONResponse(
                {
                    "status": "not ready",
                    "problems": [self.waiting_for],
                    "error": f"starting, {self.waiting_for}; retry later",
                },
                status_code=503,
            )
        await response(scope, receive, send)


async def _when_available(
    name: str,
    dependency: Dependency,
    connect: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    starting: _Starting,
    metrics: Metrics,
    serve: Callable[[], None],
) -> T | None:
    """``connect()``, tried again with capped backoff while ``name`` is unavailable.

    None when ``stop`` was set while waiting. The first failure opens the
    port (``serve``), so probes see the process alive and not ready.
    """
    attempt = 0
    while True:
        try:
            return await connect()
        except (StoreUnavailable, QueueUnavailable) as exc:
            attempt += 1
            pause = jittered(attempt, initial=START_BACKOFF_INITIAL, cap=START_BACKOFF_MAX)
            starting.waiting_for = f"waiting for {name}: {exc}"
            metrics.dependency_waits.labels(dependency, WaitStage.START).inc()
            log.warning(
                "%s is not available (attempt %d): %s; trying again in %.1fs",
                name,
                attempt,
                exc,
                pause,
            )
            serve()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            if stop.is_set():
                log.info("stopped while waiting for %s", name)
                return None


async def _open_and_migrate(config: Config) -> Store:
    store = await open_store(config)
    try:
        applied = await store.migrate()
    except BaseException:
        with contextlib.suppress(Exception):
            await store.close()
        raise
    if applied:
        log.info("database schema: applied %s", ", ".join(applied))
    return store


async def open_store(config: Config) -> Store:
    """PostgreSQL when database_url is set; else the standalone SQLite file."""
    if config.database_url:
        return await PostgresStore.connect(config.database_url, max_size=config.database_pool_size)
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
    live = LiveConfig(config)
    # Bound first, so a port in use stops the process before anything starts.
    listener = _listen(config.listen_host, config.listen_port)
    address = _address(listener)
    role = "receiver" if receiver else "worker /healthz /readyz /metrics"

    starting = _Starting(metrics)
    server = _Server(
        uvicorn.Config(
            starting,
            host=config.listen_host,
            port=config.listen_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            # httptools' C parser rather than h11's pure Python: 10-20 % less of
            # the receiver's CPU per request (tests/bench, producer_single).
            http="httptools",
        )
    )
    http: asyncio.Task[None] | None = None

    def serve() -> None:
        """Serve HTTP from now on: the probes while waiting for a dependency, the
        whole app once it is up (``starting.app``)."""
        nonlocal http
        if http is None:
            http = asyncio.create_task(server.serve(sockets=[listener]), name="http")
            log.info("%s listening on %s", role, address)
            if listening is not None:
                listening(address)

    def waiting(
        name: str, dependency: Dependency, connect: Callable[[], Awaitable[T]]
    ) -> Awaitable[T | None]:
        return _when_available(
            name, dependency, connect, stop=stop, starting=starting, metrics=metrics, serve=serve
        )

    store: Store | None = None
    queue: Queue | None = None
    sender: TelegramSender | None = None
    poster: AiohttpPoster | None = None
    bot_parts: BotParts | None = None
    ingress: IngressConsumer | None = None
    try:
        # Standalone, the store is a file here: a problem with it is not
        # something to wait out, and the process says so and exits.
        if config.database_url:
            store = await waiting(
                "PostgreSQL", Dependency.STORE, partial(_open_and_migrate, config)
            )
        else:
            store = await _open_and_migrate(config)
        if store is None:
            return
        if config.amqp_url:
            queue = await waiting("RabbitMQ", Dependency.BROKER, partial(_open_queue, config))
        else:
            queue = await _open_queue(config)
        if queue is None:
            return
        tasks: list[asyncio.Task[None]] = []
        background: set[asyncio.Task[None]] = set()

        if worker:
            from bridge.telegram import TelegramSender, create_bot
            from bridge.worker import Worker

            sender = TelegramSender(create_bot(config.telegram), live)
            clock = SystemClock()
            # Built even while off: a reload may turn the limits on.
            limiter = RateLimiter(lambda: live().rate_limits, clock.monotonic)
            pacer = Pacer(limiter, clock, live)
            handler = Worker(store, sender, live, metrics, clock, pacer=pacer, stopping=stop)
            scheduler = Scheduler(store, queue, live, metrics, clock)
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
            # Producers' receipts: the outbox's rows, POSTed to their callback_url.
            from bridge.outbox import AiohttpPoster, ReceiptSender

            poster = AiohttpPoster.create()
            receipts = ReceiptSender(store, poster, live, metrics, clock)
            tasks.append(asyncio.create_task(receipts.run(stop), name="receipts"))

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
                deps.bot_username = bot_parts.username
                tasks.extend(bot_parts.tasks)
            if config.amqp_url:  # distributed: the ingress is the receiver's other door
                ingress = await waiting(
                    "RabbitMQ (ingress)",
                    Dependency.BROKER,
                    partial(IngressConsumer.connect, config.amqp_url, config.amqp, deps),
                )
                if ingress is None:
                    return
                await ingress.start()
                deps.ingress_connected = ingress.connected
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
        starting.app = app
        serve()

        # Everything loaded at start-up (aiogram alone is ~100k objects) lives as
        # long as the process: out of the collector's sight, a full collection
        # takes milliseconds instead of stalling the loop for ~140 ms.
        gc.freeze()
        await stop.wait()
        log.info("shutting down: finishing deliveries in hand")
        server.should_exit = True
        if ingress is not None:
            await ingress.stop()
        if worker:
            await queue.stop_consuming()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.should_exit = True
        if http is not None:
            await asyncio.gather(http, return_exceptions=True)
        if bot_parts is not None:
            for close in bot_parts.closers:
                await close()
        if sender is not None:
            await sender.close()
        if ingress is not None:
            await ingress.close()
        if poster is not None:
            await poster.close()
        if queue is not None:
            await queue.close()
        if store is not None:
            await store.close()
        listener.close()  # if the server never took it
        log.info("stopped")
