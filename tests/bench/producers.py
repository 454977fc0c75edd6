"""The producer API's benchmarks (issue 14): POST /v1/messages one by one and in
batches of 1,000, and GET /v1/messages/{id} under that load. On PostgreSQL and
RabbitMQ (a `receiver`, as the ingest scenario), then standalone SQLite (`serve`).
Registered in tests.bench.suite.SCENARIOS, which imports this module at its end:
import the suite first (`python -m tests.bench` does), not this module on its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.bench.suite import Report, Stack, pct, post_all, stack
from tests.bench.suite import bodies as webhooks

PRODUCER_TOKEN = "bench-producer-token"
AUTH = {"content-type": "application/json", "authorization": f"Bearer {PRODUCER_TOKEN}"}
CHAT = -1001
STORES = ("postgresql", "sqlite")


@contextlib.asynccontextmanager
async def producer_stack(store: str) -> AsyncIterator[Stack]:
    """A stack whose config has one producer; distributed: a `receiver` (accepting is
    what is measured, as in ingest); standalone: `serve` on a SQLite file."""
    async with stack() as s:
        s.config["producers"] = {"bench": {"token": PRODUCER_TOKEN, "chats": [CHAT]}}
        if store == "sqlite":
            del s.config["database_url"], s.config["amqp_url"]
            s.config["sqlite_path"] = str(s.workdir / "alertbridge.db")
            await s.start("serve")
        else:
            await s.start("receiver")
        yield s


def messages(count: int, prefix: str) -> list[dict[str, object]]:
    run = uuid.uuid4().hex[:6]
    return [
        {"message_id": f"{prefix}-{run}-{i}", "chat_id": CHAT, "text": f"Export <b>{i}</b> ready"}
        for i in range(count)
    ]


async def post_messages(
    client: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], float]:
    """Closed loop, ``concurrency`` in flight; every answer must be 202. (latencies, seconds)"""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(body: bytes) -> None:
        async with gate:
            started = time.perf_counter()
            async with client.post(url, data=body, headers=AUTH) as answer:
                await answer.read()
                if answer.status != 202:
                    raise RuntimeError(f"POST /v1/messages answered {answer.status}")
            latencies.append(time.perf_counter() - started)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return latencies, time.perf_counter() - t0


def session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def producer_single(report: Report, quick: bool) -> None:
    count = 2000 if quick else 20000
    for store in STORES:
        async with producer_stack(store) as s, session(64) as client:
            url = f"{s.url}/v1/messages"
            pid = s.processes[0].pid
            # A warm-up: the first requests open the pool's connections.
            warm = [json.dumps(m).encode() for m in messages(200, "warm")]
            await post_messages(client, url, warm, 64)
            bodies = [json.dumps(m).encode() for m in messages(count, "single")]
            cpu = cpu_seconds(pid)
            latencies, took = await post_messages(client, url, bodies, 64)
            cpu = cpu_seconds(pid) - cpu
            rate = count / took
            report.add(
                f"{store}: single messages accepted/s (64 in flight)",
                f"{rate:,.0f}",
                ">= 1,000",
                rate >= 1000,
            )
            p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
            report.add(f"{store}: accept latency p50 / p99", f"{p50:.1f} / {p99:.1f} ms")
            report.add(f"{store}: bridge CPU per message", f"{cpu / count * 1000:.2f} ms")
            if store == "postgresql":
                # The same process, the same load, single-alert webhooks: what this
                # machine allows right now, to tell the API's cost from the machine's.
                cpu = cpu_seconds(pid)
                _, took = await post_all(f"{s.url}/alertmanager", webhooks(count, "Beside"), 64)
                cpu = cpu_seconds(pid) - cpu
                report.add(
                    f"{store}: webhooks/s beside it, for comparison",
                    f"{count / took:,.0f} ({cpu / count * 1000:.2f} ms CPU each)",
                )


async def producer_batch(report: Report, quick: bool) -> None:
    rounds = 5 if quick else 9
    for store in STORES:
        async with producer_stack(store) as s, session(1) as client:
            url = f"{s.url}/v1/messages/batch"
            times = []
            for i in range(rounds + 1):
                body = json.dumps({"messages": messages(1000, f"batch{i}")}).encode()
                started = time.perf_counter()
                async with client.post(url, data=body, headers=AUTH) as answer:
                    results = (await answer.json())["results"]
                took = time.perf_counter() - started
                if answer.status != 200 or {r["code"] for r in results} != {202}:
                    raise RuntimeError(f"a batch answered {answer.status}")
                if i > 0:  # the first warms the process up (imports, connections)
                    times.append(took)
            median = statistics.median(times)
            report.add(
                f"{store}: 1,000-message batch accepted (median of {rounds})",
                f"{median * 1000:.0f} ms",
                "< 200 ms",
                median < 0.2,
            )


async def lookups(
    client: aiohttp.ClientSession, base: str, ids: list[str], count: int
) -> list[float]:
    """GET /v1/messages/{id} one after another, cycling through ``ids``. Latencies."""
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        async with client.get(f"{base}/v1/messages/{ids[i % len(ids)]}", headers=AUTH) as answer:
            await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"GET /v1/messages answered {answer.status}")
        latencies.append(time.perf_counter() - started)
    return latencies


async def keep_posting(
    client: aiohttp.ClientSession, url: str, stop: asyncio.Event, posted: list[int]
) -> None:
    """Single messages, 32 in flight, until ``stop``; ``posted`` counts them by chunk."""
    n = 0
    while not stop.is_set():
        chunk = [json.dumps(m).encode() for m in messages(256, f"load{n}")]
        await post_messages(client, url, chunk, 32)
        posted.append(len(chunk))
        n += 1


async def producer_status(report: Report, quick: bool) -> None:
    count = 1000 if quick else 5000
    for store in STORES:
        async with producer_stack(store) as s, session(64) as load, session(1) as reader:
            url = f"{s.url}/v1/messages"
            known = messages(500, "known")
            await post_messages(load, url, [json.dumps(m).encode() for m in known], 64)
            ids = [str(m["message_id"]) for m in known]
            idle = await lookups(reader, s.url, ids, 200)
            report.add(
                f"{store}: status p50 / p99, idle",
                f"{pct(idle, 0.5) * 1000:.1f} / {pct(idle, 0.99) * 1000:.1f} ms",
            )
            # The load: single messages, 32 in flight, until the lookups are done.
            stop = asyncio.Event()
            posted: list[int] = []
            loader = asyncio.create_task(keep_posting(load, url, stop, posted))
            t0 = time.perf_counter()
            try:
                loaded = await lookups(reader, s.url, ids, count)
            finally:
                stop.set()
                await loader
            rate = sum(posted) / (time.perf_counter() - t0)
            p50, p99 = pct(loaded, 0.5) * 1000, pct(loaded, 0.99) * 1000
            report.add(f"{store}: single POSTs/s meanwhile (32 in flight)", f"{rate:,.0f}")
            report.add(f"{store}: status p50 under that load", f"{p50:.1f} ms")
            report.add(f"{store}: status p99 under that load", f"{p99:.1f} ms", "< 10 ms", p99 < 10)
