"""A small throughput check of the spine: webhooks accepted per second and
deliveries per second, against the real PostgreSQL and RabbitMQ on this
machine and the Telegram double (no latency, no rate limits).

    .venv/bin/python -m tests.bench.throughput [--webhooks 2000] [--concurrency 32]
        [--command serve|receiver]

The bridge runs as a real `alertbridge serve` subprocess, so its figures are
not mixed with the load generator's CPU in one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from tests.conftest import PG_ADMIN_URL, TOKEN
from tests.payloads import alert, webhook
from tests.processes import bridge_process, local_config
from tests.telegram_double import TelegramDouble


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(webhooks: int, concurrency: int, command: str) -> None:
    name = f"ab_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    telegram = TelegramDouble(token=TOKEN)
    await telegram.start()
    config = local_config(database_url, telegram.url, name, -1001)
    listen = config["listen"]
    try:
        async with bridge_process(config, command, log_level="warning") as server:
            rss_rest = rss_mb(server.pid)
            latencies: list[float] = []
            # Bodies are encoded up front and sent with aiohttp: the load
            # generator must not be the bottleneck it measures.
            bodies = [json.dumps(webhook(alert(f"Bench{i:06d}"))).encode() for i in range(webhooks)]
            gate = asyncio.Semaphore(concurrency)
            url = f"http://{listen}/alertmanager"
            headers = {"content-type": "application/json"}
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as client:

                async def one(body: bytes) -> None:
                    async with gate:
                        started = time.perf_counter()
                        async with client.post(url, data=body, headers=headers) as answer:
                            await answer.read()
                            answer.raise_for_status()
                        latencies.append(time.perf_counter() - started)

                t0 = time.perf_counter()
                await asyncio.gather(*(one(b) for b in bodies))
                accepted_in = time.perf_counter() - t0
                expected = webhooks if command == "serve" else 0
                await telegram.wait_for_messages(expected, timeout=600)
                delivered_in = time.perf_counter() - t0
            rss_after = rss_mb(server.pid)
    finally:
        await telegram.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    latencies.sort()
    rows = [
        ("webhooks", f"{webhooks} single-alert, {concurrency} concurrent"),
        ("accepted/s (200 = committed)", f"{webhooks / accepted_in:,.0f}"),
        ("accept latency p50", f"{statistics.median(latencies) * 1000:.1f} ms"),
        ("accept latency p99", f"{latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"),
        (
            "delivered/s (first POST to last sendMessage)",
            f"{webhooks / delivered_in:,.0f}" if command == "serve" else "n/a (receiver only)",
        ),
        ("serve RSS at rest / after", f"{rss_rest:.0f} MB / {rss_after:.0f} MB"),
        (
            "load generator max RSS",
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--command",
        choices=["serve", "receiver"],
        default="serve",
        help="serve: receive and deliver; receiver: measure accepting alone",
    )
    args = parser.parse_args()
    asyncio.run(run(args.webhooks, args.concurrency, args.command))


if __name__ == "__main__":
    main()
