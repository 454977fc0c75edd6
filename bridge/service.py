"""Wire the stages into running processes: receiver, worker, or both.

Every dependency is built here and passed down; nothing below reaches for a
global. Shutdown on SIGTERM/SIGINT: stop accepting HTTP, stop taking queue
messages, let the deliveries in hand be recorded and acked, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.queue.amqp import AmqpQueue
from bridge.receiver import ReceiverDeps, create_app
from bridge.render import build_environment
from bridge.scheduler import Scheduler
from bridge.store import PostgresStore
from bridge.telegram import TelegramSender, create_bot
from bridge.worker import Worker

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _require_infrastructure(config: Config) -> tuple[str, str]:
    if not config.database_url or not config.amqp_url:
        raise ConfigError(
            "database_url and amqp_url are both required (PostgreSQL and RabbitMQ); "
            "set them in the config or as ALERTBRIDGE_DATABASE_URL / ALERTBRIDGE_AMQP_URL"
        )
    return config.database_url, config.amqp_url


async def run_until_signalled(config: Config, *, receiver: bool, worker: bool) -> None:
    """The CLI's entry: run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(config, receiver=receiver, worker=worker, stop=stop)


async def run(
    config: Config,
    *,
    receiver: bool,
    worker: bool,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
) -> None:
    """Run until ``stop`` is set, then shut down without losing what is in hand."""
    database_url, amqp_url = _require_infrastructure(config)
    metrics = metrics if metrics is not None else Metrics()

    store = await PostgresStore.connect(database_url)
    queue: AmqpQueue | None = None
    sender: TelegramSender | None = None
    try:
        applied = await store.migrate()
        if applied:
            log.info("database schema: applied %s", ", ".join(applied))
        queue = await AmqpQueue.connect(amqp_url, config.amqp)
        tasks: list[asyncio.Task[None]] = []
        server: _Server | None = None

        if worker:
            sender = TelegramSender(create_bot(config.telegram))
            handler = Worker(store, sender, config.delivery, metrics)
            scheduler = Scheduler(store, queue, config.delivery, metrics)
            await queue.consume(handler.handle)
            tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
            log.info("worker consuming %s", config.amqp.queue)

        if receiver:
            deps = ReceiverDeps(
                config=config,
                routes=config.route_tree(),
                templates=build_environment(config.template_dirs),
                store=store,
                publisher=queue,
                metrics=metrics,
            )
            server = _Server(
                uvicorn.Config(
                    create_app(deps),
                    host=config.listen_host,
                    port=config.listen_port,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                )
            )
            tasks.append(asyncio.create_task(server.serve(), name="http"))
            log.info("receiver listening on %s", config.listen)

        await stop.wait()
        log.info("shutting down: finishing deliveries in hand")
        if server is not None:
            server.should_exit = True
        if worker:
            await queue.stop_consuming()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if sender is not None:
            await sender.close()
        if queue is not None:
            await queue.close()
        await store.close()
        log.info("stopped")
