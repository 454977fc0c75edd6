"""The RabbitMQ ingress: producers' messages consumed from the broker and committed.

N messages are published (persistent, publisher confirms) while no receiver
runs, so the queue holds a backlog; then one receiver drains it. The figure is
messages committed per second, from the store's own commit times (a batch's
rows share its transaction's start), so the process's start-up is not in it.
Run once with the default batch and once with a batch of one message (one
transaction each), to show what batching buys. The queues and exchanges the
runs declare are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg

from bridge.config import AmqpConfig
from bridge.queue.amqp import shard_queue
from tests.conftest import AMQP_URL

if TYPE_CHECKING:
    # suite.py imports this module (to find the scenario), so not at import time.
    from tests.bench.suite import Report, Stack

CHAT = -1001
PRODUCER = "bench"


async def _publish(exchange_name: str, count: int, prefix: str) -> float:
    """Publish ``count`` messages with confirms, 500 awaiting at a time; seconds taken."""
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        started = time.perf_counter()
        for first in range(0, count, 500):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            json.dumps(
                                {"message_id": f"{prefix}-{i}", "chat_id": CHAT, "text": f"n{i}"}
                            ).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=PRODUCER,
                    )
                    for i in range(first, min(first + 500, count))
                )
            )
        return time.perf_counter() - started


async def _committed(s: Stack) -> tuple[int, float]:
    """(messages stored, per second between the first and the last commit)."""
    connection = await asyncpg.connect(s.database_url)
    try:
        row = await connection.fetchrow(
            """SELECT count(*) AS n,
                      count(*) FILTER (WHERE created_at < (SELECT max(created_at)
                                                           FROM producer_messages)) AS before,
                      extract(epoch FROM max(created_at) - min(created_at)) AS span
               FROM producer_messages"""
        )
    finally:
        await connection.close()
    assert row is not None
    span = float(row["span"] or 0)
    return int(row["n"]), (row["before"] / span if span > 0 else float("nan"))


async def _delete_topology(name: str, settings: dict[str, Any]) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        queues = [shard_queue(name, i) for i in range(AmqpConfig().shards)]
        queues += [
            f"{name}.dead",
            settings["ingress_queue"],
            f"{settings['ingress_queue']}.rejected",
        ]
        for queue in queues:
            await channel.queue_delete(queue)
        exchanges = [name, f"{name}.dead"]
        exchanges += [settings["ingress_exchange"], f"{settings['ingress_exchange']}.rejected"]
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def _run(report: Report, count: int, batch: int | None) -> None:
    from tests.bench.suite import stack

    async with stack() as s:
        amqp: dict[str, Any] = s.config["amqp"]
        amqp["ingress_exchange"] = amqp["ingress_queue"] = f"{s.name}.ingress"
        if batch is not None:
            amqp["ingress_batch"] = batch
        s.config["producers"] = {PRODUCER: {"token": "bench-token", "chats": [CHAT]}}
        try:
            s.stop(await s.start("receiver"))  # declares the topology
            took = await _publish(amqp["ingress_exchange"], count, s.name)
            label = f"batch {batch}" if batch is not None else "default batch"
            if batch is None:
                rate = count / took
                report.add("published/s with confirms (500 in flight)", f"{rate:,.0f}")
            await s.start("receiver")
            deadline = time.monotonic() + 300
            stored, rate = 0, float("nan")
            while time.monotonic() < deadline:
                stored, rate = await _committed(s)
                if stored >= count:
                    break
                await asyncio.sleep(0.2)
            target, met = (">= 1,000", rate >= 1000) if batch is None else ("", None)
            report.add(f"ingress consumed+committed/s, {label}", f"{rate:,.0f}", target, met)
            if stored < count:
                report.add(f"ingress stored, {label}", f"{stored} of {count}", "all", False)
        finally:
            for process in s.processes:
                s.stop(process)
            await _delete_topology(s.name, amqp)


async def ingress(report: Report, quick: bool) -> None:
    count = 2000 if quick else 20000
    await _run(report, count, None)
    await _run(report, min(count, 2000), 1)
