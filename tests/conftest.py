"""Fixtures that stand up the real parts: a fresh PostgreSQL database, private
RabbitMQ names, the strict Telegram double, and the bridge itself."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import yaml

from bridge.config import AmqpConfig, Config
from bridge.config_file import parse_config
from bridge.delivery import UNFINISHED
from bridge.metrics import Metrics
from bridge.queue.amqp import shard_queue
from bridge.sandbox.botapi import TelegramDouble
from bridge.service import run
from tests.tcp_proxy import TcpProxy

PG_ADMIN_URL = os.environ.get(
    "ALERTBRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("ALERTBRIDGE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
TOKEN = "123:ABC"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A brand-new database per test, dropped afterwards."""
    name = f"ab_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def amqp_names() -> AsyncIterator[dict[str, str]]:
    """Exchange and queue names no other test uses; deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    names = {
        "exchange": f"ab-test-{suffix}",
        "queue": f"ab-test-{suffix}",
        # The receiver's RabbitMQ ingress (bridge/ingress_consumer.py).
        "ingress_exchange": f"ab-test-{suffix}.ingress",
        "ingress_queue": f"ab-test-{suffix}.ingress",
    }
    yield names
    try:
        connection = await aio_pika.connect(AMQP_URL)
    except Exception:  # noqa: BLE001 - the broker may be what a test restarted
        return
    async with connection:
        channel = await connection.channel()
        shards = [shard_queue(names["queue"], i) for i in range(AmqpConfig().shards)]
        ingress = (names["ingress_queue"], f"{names['ingress_queue']}.rejected")
        for queue in (*shards, f"{names['queue']}.dead", *ingress):
            await channel.queue_delete(queue)
        for exchange in (
            names["exchange"],
            f"{names['exchange']}.dead",
            names["ingress_exchange"],
            f"{names['ingress_exchange']}.rejected",
        ):
            await channel.exchange_delete(exchange)


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramDouble]:
    double = TelegramDouble(token=TOKEN)
    await double.start()
    yield double
    await double.stop()


def config_dict(
    database_url: str | None,
    amqp_names: dict[str, str] | None,
    telegram_url: str,
    *,
    sqlite_path: Path | None = None,
    listen: str | None = None,
    route: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The one config the tests start from: this machine's PostgreSQL and RabbitMQ
    (``database_url`` and ``amqp_names``), or standalone on ``sqlite_path`` when both
    are None; short leases and waits; rate limits off unless a test is about them."""
    distributed: dict[str, Any] = (
        {"database_url": database_url, "amqp_url": AMQP_URL}
        if database_url is not None
        else {"sqlite_path": str(sqlite_path)}
    )
    return {
        "telegram": {"token": TOKEN, "api_url": telegram_url, "request_timeout": "2s"},
        **distributed,
        # Port 0: the bridge binds a port the system picks and reports it.
        "listen": listen or "127.0.0.1:0",
        "amqp": {**(amqp_names or {}), "prefetch": 16},
        "delivery": {
            "lease": "5s",
            "scheduler_interval": "200ms",
            "republish_after": "2s",
            "backoff_initial": "100ms",
            "backoff_max": "1s",
            **(delivery or {}),
        },
        "route": route or {"chats": [-1001]},
        # Off unless a test is about them: most tests send bursts to one chat.
        "rate_limits": {"enabled": False},
        **extra,
    }


def build_config(data: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(data), source="test-config")


@dataclass
class RunningBridge:
    config: Config
    metrics: Metrics
    stop: asyncio.Event
    task: asyncio.Task[None]
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=f"http://{self.config.listen}", timeout=10)

    async def post(self, path: str, payload: Any = None, **kwargs: Any) -> httpx.Response:
        if payload is not None:
            kwargs["json"] = payload
        return await self.client.post(path, **kwargs)

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=30)
        await self.client.aclose()


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound
    (port 0, the system's choice) and never listening, so no one else gets it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def start_bridge(
    config: Config, *, receiver: bool = True, worker: bool = True, config_path: Path | None = None
) -> RunningBridge:
    """The bridge in this process; its ``config.listen`` is the address it serves on."""
    stop = asyncio.Event()
    metrics = Metrics()
    bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            receiver=receiver,
            worker=worker,
            stop=stop,
            metrics=metrics,
            config_path=config_path,
            listening=bound.set_result,
        )
    )
    # Every process serves HTTP (a worker alone too); once it reports where,
    # a request waits in the socket's backlog until it is answered.
    await asyncio.wait({bound, task}, return_when=asyncio.FIRST_COMPLETED)
    if not bound.done():
        task.result()  # raises what made the bridge stop
        raise RuntimeError("the bridge stopped before it served")
    served = config.model_copy(update={"listen": bound.result()})
    return RunningBridge(served, metrics, stop, task)


@pytest.fixture
async def bridge_factory(
    database_url: str, amqp_names: dict[str, str], telegram: TelegramDouble
) -> AsyncIterator[Any]:
    started: list[RunningBridge] = []

    async def factory(**overrides: Any) -> RunningBridge:
        config = build_config(config_dict(database_url, amqp_names, telegram.url, **overrides))
        bridge = await start_bridge(config)
        started.append(bridge)
        return bridge

    yield factory
    for bridge in started:
        if not bridge.task.done():
            await bridge.shutdown()


@pytest.fixture
async def bridge(bridge_factory: Any) -> RunningBridge:
    return await bridge_factory()  # type: ignore[no-any-return]


@dataclass
class ProxiedDatabase:
    """The test's database behind a proxy a test can cut and restore."""

    proxy: TcpProxy
    url: str  # database_url, through the proxy


@pytest.fixture
async def proxied_database(database_url: str) -> AsyncIterator[ProxiedDatabase]:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    through = re.sub(r"@127\.0\.0\.1(:5432)?/", f"@127.0.0.1:{proxy.port}/", database_url)
    try:
        yield ProxiedDatabase(proxy, through)
    finally:
        await proxy.stop()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll an async or sync predicate until it is truthy; fail loudly after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def states(database_url: str) -> dict[str, int]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
    finally:
        await connection.close()
    return {r["state"]: r["n"] for r in rows}


async def settled(database_url: str, total: int, *, timeout: float = 30.0) -> dict[str, int]:
    """Wait until ``total`` deliveries exist and none is unfinished; their states."""

    async def done() -> bool:
        counts = await states(database_url)
        busy = sum(counts.get(s, 0) for s in UNFINISHED)
        return sum(counts.values()) == total and busy == 0

    await wait_until(done, timeout=timeout, interval=0.1)
    return await states(database_url)


@pytest.fixture
def python() -> Iterator[str]:
    yield sys.executable
