"""The benchmark suite: real PostgreSQL and RabbitMQ on this machine, the
bridge as real subprocesses, the Telegram double in this process.

    .venv/bin/python -m tests.bench [--quick] [--only NAME ...] [--soak-seconds N] [--json FILE]

Scenarios: ingest, e2e, worker, storm, rss, retention, retention_sqlite, retention_off,
retention_off_sqlite, versus, and the producer API's (tests/bench/producers.py):
producer_single, producer_batch, producer_status; and ingress (tests/bench/ingress.py,
the RabbitMQ ingress). The retention ones are the RSS
soak with a one-minute retention, on PostgreSQL and on the standalone SQLite
file, and (_off) the same soak keeping everything, to compare the store's size.
Each prints its figures next to the issue's target; nothing is asserted (these
machines are shared and noisy, so figures belong in a table, not in a test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import yaml

from bridge.config import AmqpConfig
from bridge.queue.amqp import shard_queue
from bridge.sandbox.botapi import TelegramDouble
from tests.alertmanager import Alertmanager, am_alert
from tests.conftest import AMQP_URL, PG_ADMIN_URL, TOKEN
from tests.payloads import alert, webhook
from tests.processes import start_bridge_process

HEADERS = {"content-type": "application/json"}


def local_config(database_url: str, telegram_url: str, name: str, chat: int) -> dict[str, Any]:
    """The benchmarks' config: this machine's PostgreSQL and RabbitMQ, a Telegram double,
    and the bridge's own defaults (the tests' short leases would measure something else)."""
    return {
        "telegram": {"token": TOKEN, "api_url": telegram_url},
        "database_url": database_url,
        "amqp_url": AMQP_URL,
        "listen": "127.0.0.1:0",
        "amqp": {"exchange": name, "queue": name},
        "route": {"chats": [chat]},
        # Telegram's limits off, as the benchmarks measure the bridge, not them;
        # a caller measuring a storm turns them on.
        "rate_limits": {"enabled": False},
    }


@dataclass
class Figure:
    name: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Report:
    scenario: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.figures.append(Figure(name, value, target, met))
        mark = "" if met is None else ("  met" if met else "  MISSED")
        print(f"  {name:<48} {value:>18}  {target}{mark}", flush=True)


# ----------------------------------------------------------------------- plumbing


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


@dataclass
class Stack:
    name: str
    database_url: str
    telegram: TelegramDouble
    config: dict[str, Any]
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    address: str = ""  # where the first process started without ``own_port`` serves

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self, command: str, *, own_port: bool = False) -> subprocess.Popen[bytes]:
        """`alertbridge COMMAND`, once it serves; ``own_port`` for a second process
        beside the first (every process binds a port the system picks)."""
        path = self.workdir / f"config-{len(self.processes)}.yml"
        path.write_text(yaml.safe_dump(self.config))
        served = await start_bridge_process(path, command, log_level="error")
        self.processes.append(served.process)
        if not own_port:
            self.address = served.address
        return served.process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    async def states(self) -> dict[str, int]:
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch("SELECT state, count(*) AS n FROM deliveries GROUP BY 1")
        finally:
            await connection.close()
        return {r["state"]: r["n"] for r in rows}


@contextlib.asynccontextmanager
async def stack(**double: Any) -> AsyncIterator[Stack]:
    """A fresh database, broker names and Telegram double, removed afterwards."""
    name = f"ab_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    telegram = TelegramDouble(token=TOKEN, **double)
    await telegram.start()
    database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(
            name,
            database_url,
            telegram,
            local_config(database_url, telegram.url, name, -1001),
            Path(tmp),
        )
        try:
            yield s
        finally:
            for process in s.processes:
                s.stop(process)
            await telegram.stop()
            await delete_broker_names(name)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def delete_broker_names(name: str) -> None:
    """The queues and exchanges a stack's bridge declared: left behind, hundreds of
    quorum queues wedged the shared broker once. A queue never declared (a
    standalone stack) is deleted all the same: deleting is idempotent."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        shards = [shard_queue(name, i) for i in range(AmqpConfig().shards)]
        for queue in (*shards, f"{name}.dead"):
            await channel.queue_delete(queue)
        for exchange in (name, f"{name}.dead"):
            await channel.exchange_delete(exchange)


def chat_routes(chats: list[int]) -> dict[str, Any]:
    """Alerts labelled chat=N go to chat N."""
    return {
        "chats": [-1],
        "routes": [{"matchers": [f'chat="{c}"'], "chats": [c]} for c in chats],
    }


async def post_all(
    url: str, bodies: list[bytes], concurrency: int = 32
) -> tuple[list[float], float]:
    """Closed loop: ``concurrency`` requests in flight. (latencies, seconds)."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one(body: bytes) -> None:
            async with gate:
                started = time.perf_counter()
                async with client.post(url, data=body, headers=HEADERS) as answer:
                    await answer.read()
                    answer.raise_for_status()
                latencies.append(time.perf_counter() - started)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return latencies, time.perf_counter() - t0


async def post_paced(
    url: str,
    bodies: list[bytes],
    rate: float,
    on_start: Callable[[int, float], None] | None = None,
    on_answer: Callable[[float, float], None] | None = None,
) -> list[float]:
    """Open loop: request i starts at i/rate, whatever the answers do. Latencies."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one(i: int, body: bytes, at: float) -> None:
            await asyncio.sleep(max(at - time.monotonic(), 0))
            started = time.monotonic()
            if on_start is not None:
                on_start(i, started)
            async with client.post(url, data=body, headers=HEADERS) as answer:
                await answer.read()
                answer.raise_for_status()
            latencies.append(time.monotonic() - started)
            if on_answer is not None:
                on_answer(started, latencies[-1])

        t0 = time.monotonic() + 0.1
        await asyncio.gather(*(one(i, b, t0 + i / rate) for i, b in enumerate(bodies)))
    return latencies


def bodies(count: int, prefix: str, **labels: str) -> list[bytes]:
    return [
        json.dumps(webhook(alert(f"{prefix}{i:06d}", labels=labels))).encode() for i in range(count)
    ]


def firing_then_resolved(count: int, prefix: str) -> list[bytes]:
    """Alerts that fire and resolve two seconds later (at 50/s), as alerts do: each
    group's thread opens and closes, so retention can take it."""
    lag = 100
    out: list[bytes] = []
    for i in range(count):
        fired = i - lag - 1  # the (even) firing an odd request resolves
        if i % 2 == 1 and fired >= 0:
            out.append(
                json.dumps(webhook(alert(f"{prefix}{fired:06d}", status="resolved"))).encode()
            )
        else:
            out.append(json.dumps(webhook(alert(f"{prefix}{i:06d}"))).encode())
    return out


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False


# ---------------------------------------------------------------------- scenarios


async def ingest(report: Report, quick: bool) -> None:
    seconds = 4 if quick else 10
    async with stack() as s:
        await s.start("receiver")
        url = f"{s.url}/alertmanager"
        count = 1500 if quick else 6000
        _, took = await post_all(url, bodies(count, "Ingest"), concurrency=64)
        rate = count / took
        report.add("accepted/s, sustained (64 in flight)", f"{rate:,.0f}", ">= 1,000", rate >= 1000)

        paced = await post_paced(url, bodies(int(200 * seconds), "Paced"), rate=200)
        p50, p99 = pct(paced, 0.5) * 1000, pct(paced, 0.99) * 1000
        report.add("accept latency at 200/s p50", f"{p50:.1f} ms")
        report.add("accept latency at 200/s p99", f"{p99:.1f} ms")

        times = []
        for i in range(5):
            big = webhook(*(alert(f"Big{i}", labels={"n": str(n)}) for n in range(1000)))
            big["groupKey"] = f'{{}}:{{alertname="Big{i}"}}'
            lat, _ = await post_all(url, [json.dumps(big).encode()], concurrency=1)
            times.append(lat[0])
        median = statistics.median(times)
        report.add(
            "1,000-alert webhook accept (median of 5)",
            f"{median * 1000:.0f} ms",
            "< 1 s",
            median < 1,
        )


async def e2e(report: Report, quick: bool) -> None:
    seconds = 5 if quick else 15
    async with stack() as s:
        await s.start("serve")
        count = 20 * seconds
        started: dict[int, float] = {}

        def on_start(i: int, at: float) -> None:
            started[i] = at

        await post_paced(f"{s.url}/alertmanager", bodies(count, "E2e"), 20, on_start)
        await s.telegram.wait_for_messages(count, timeout=120)
        arrived = {}
        for call in s.telegram.calls:
            if call.method == "sendMessage" and "E2e" in call.params.get("text", ""):
                index = int(call.params["text"].split("E2e")[1][:6])
                arrived.setdefault(index, call.at)
        latencies = [(arrived[i] - started[i]) * 1000 for i in started if i in arrived]
        p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
        report.add("webhook -> sendMessage p50 at 20/s", f"{p50:.1f} ms", "< 25 ms", p50 < 25)
        report.add("webhook -> sendMessage p99 at 20/s", f"{p99:.1f} ms", "< 100 ms", p99 < 100)


async def worker(report: Report, quick: bool) -> None:
    count = 1000 if quick else 3000
    chats = [-2000 - i for i in range(64)]
    for workers in (1, 2):
        async with stack() as s:
            s.config["route"] = chat_routes(chats)
            receiver = await s.start("receiver")
            payloads = [
                json.dumps(
                    webhook(alert(f"W{i:06d}", labels={"chat": str(chats[i % 64])}))
                ).encode()
                for i in range(count)
            ]
            await post_all(f"{s.url}/alertmanager", payloads)
            s.stop(receiver)
            for _ in range(workers):
                await s.start("worker", own_port=True)
            await s.telegram.wait_for_messages(count, timeout=600)
            # From the first message to the last: a process's start-up (imports,
            # connections, taking its shards) is not delivery work.
            sent = [c.at for c in s.telegram.calls if c.method == "sendMessage"]
            rate = (len(sent) - 1) / (max(sent) - min(sent))
            met = rate >= 500 if workers == 1 else None
            target = ">= 500" if workers == 1 else ""
            report.add(f"deliveries/s, {workers} worker process(es)", f"{rate:,.0f}", target, met)


def allowed_sends(span: float, group_chats: int, per_bot: float = 25.0) -> float:
    """The most messages Telegram's limits admit in ``span`` seconds to this many
    group chats: each at most 1/s and 20 in any 60 s, all together at most
    ``per_bot``/s. A group's 20/min, not the bot's 25/s, is what binds once a
    storm lasts longer than 20 s."""
    whole = int(span)
    per_chat = min(whole + 1, 20 * (whole // 60 + 1))
    return min(per_bot * span + 1, group_chats * per_chat)


async def storm(report: Report, quick: bool) -> None:
    chats = [-3000 - i for i in range(30)]
    count = 600 if quick else 3000
    for digest_after in (20, 0):
        async with stack(enforce_rate_limits=True) as s:
            s.config["route"] = chat_routes(chats)
            s.config["rate_limits"] = {"enabled": True, "digest_after": digest_after}
            await s.start("serve")
            payloads = [
                json.dumps(
                    webhook(
                        alert(f"Storm{i % 7}", labels={"chat": str(chats[i % 30]), "n": str(i)})
                    )
                ).encode()
                for i in range(count)
            ]
            t0 = time.monotonic()
            await post_all(f"{s.url}/alertmanager", payloads, concurrency=64)
            cap = 60 if quick else 240

            async def settled() -> bool:
                st = await s.states()
                return st.get("delivered", 0) + st.get("suppressed", 0) >= count

            await until(settled, cap)
            sends = [c for c in s.telegram.calls if c.method == "sendMessage"]
            ok = [c for c in sends if c.response and c.response.get("ok")]
            first_by_chat: dict[int, float] = {}
            for c in ok:
                first_by_chat.setdefault(int(c.params["chat_id"]), c.at)
            states = await s.states()
            label = "digest on" if digest_after else "digest off"
            share = s.telegram.rate_limited / max(len(sends), 1) * 100
            report.add(
                f"[{label}] 429s / sendMessage calls",
                f"{s.telegram.rate_limited} / {len(sends)} ({share:.2f} %)",
                "<= 0.5 %",
                share <= 0.5,
            )
            if len(first_by_chat) == len(chats):
                picture = max(first_by_chat.values()) - t0
                report.add(f"[{label}] every chat has its picture after", f"{picture:.1f} s")
            else:
                report.add(f"[{label}] chats reached", f"{len(first_by_chat)} / {len(chats)}")
            if len(ok) > 1:
                span = max(c.at for c in ok) - min(c.at for c in ok)
                achieved = len(ok) / span if span else float("nan")
                allowed = allowed_sends(span, len(chats)) / span
                met = achieved >= 0.9 * allowed if not digest_after else None
                report.add(
                    f"[{label}] messages/s achieved (allowed {allowed:.1f})",
                    f"{achieved:.1f} ({achieved / allowed:.0%})",
                    ">= 90 %" if not digest_after else "",
                    met,
                )
            lost = states.get("failed", 0)
            pending = sum(states.get(k, 0) for k in ("queued", "retry", "sending"))
            report.add(
                f"[{label}] delivered / suppressed / pending",
                f"{states.get('delivered', 0)} / {states.get('suppressed', 0)} / {pending}",
            )
            report.add(f"[{label}] lost (failed)", str(lost), "0", lost == 0)


async def rss(report: Report, quick: bool, soak_seconds: int) -> None:
    seconds = 30 if quick else soak_seconds
    async with stack() as s:
        process = await s.start("serve")
        await asyncio.sleep(2)
        rest = rss_mb(process.pid)
        report.add("serve RSS at rest", f"{rest:.0f} MB", "< 150 MB", rest < 150)
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                samples.append((time.monotonic() - t0, rss_mb(process.pid)))
                await asyncio.sleep(10)

        sampler = asyncio.create_task(sample())
        await post_paced(f"{s.url}/alertmanager", bodies(50 * seconds, "Soak"), 50)
        sampler.cancel()
        samples.append((time.monotonic() - t0, rss_mb(process.pid)))
        values = [v for _, v in samples]
        half = samples[len(samples) // 2 :]
        slope = (half[-1][1] - half[0][1]) / max((half[-1][0] - half[0][0]) / 60, 1e-9)
        report.add(
            f"serve RSS over a {seconds} s soak at 50/s (min/max/last)",
            f"{min(values):.0f}/{max(values):.0f}/{values[-1]:.0f} MB",
            "< 150 MB",
            max(values) < 150,
        )
        report.add("RSS slope over the second half", f"{slope:+.2f} MB/min", "flat")


async def _database_mb(s: Stack, sqlite_path: Path | None) -> float:
    """The store's size on disk: the SQLite file and its WAL, or PostgreSQL's database."""
    if sqlite_path is not None:
        wal = sqlite_path.with_name(sqlite_path.name + "-wal")
        files = [sqlite_path, wal]
        return sum(f.stat().st_size for f in files if f.exists()) / 2**20
    connection = await asyncpg.connect(s.database_url)
    try:
        size = await connection.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await connection.close()
    return float(size) / 2**20


def _slope(samples: list[tuple[float, float]]) -> float:
    """Change per minute between the first and last sample of ``samples``."""
    return (samples[-1][1] - samples[0][1]) / max((samples[-1][0] - samples[0][0]) / 60, 1e-9)


async def _retention_soak(
    report: Report, quick: bool, soak_seconds: int, standalone: bool, *, prune: bool = True
) -> None:
    """The RSS soak with a one-minute retention: the store's size and the process's
    RSS should be flat over the second half, and accepting as fast as before the
    pruner had anything to delete. With ``prune`` off, the default retention (30
    days) keeps everything: the same soak's size without retention, to compare."""
    seconds = 120 if quick else soak_seconds
    retention = 60
    async with stack() as s:
        if prune:
            s.config["retention"] = f"{retention}s"
        s.config["delivery"] = {"dedup_window": "30s"}
        sqlite_path = None
        if standalone:
            sqlite_path = s.workdir / "alertbridge.db"
            del s.config["database_url"], s.config["amqp_url"]
            s.config["sqlite_path"] = str(sqlite_path)
        process = await s.start("serve")
        await asyncio.sleep(2)
        rss_samples: list[tuple[float, float]] = []
        size_samples: list[tuple[float, float]] = []
        answers: list[tuple[float, float]] = []
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                at = time.monotonic() - t0
                rss_samples.append((at, rss_mb(process.pid)))
                size_samples.append((at, await _database_mb(s, sqlite_path)))
                await asyncio.sleep(10)

        sampler = asyncio.create_task(sample())
        vacuum = None
        if not standalone and not await _autovacuum(s):
            # A server with autovacuum off never reuses deleted rows' space, whatever
            # the bridge deletes; stand in for it, and say so.
            vacuum = asyncio.create_task(_vacuum_every(s, 30))
            report.add("autovacuum is off on this server", "VACUUM every 30 s by the soak")
        await post_paced(
            f"{s.url}/alertmanager",
            firing_then_resolved(50 * seconds, "Keep"),
            50,
            on_answer=lambda started, latency: answers.append((started - t0, latency)),
        )
        sampler.cancel()
        if vacuum is not None:
            vacuum.cancel()
        rss_samples.append((time.monotonic() - t0, rss_mb(process.pid)))
        size_samples.append((time.monotonic() - t0, await _database_mb(s, sqlite_path)))
        per_minute = [f"{v:.1f}" for at, v in size_samples if int(at) % 60 < 10]
        report.add("store size at each minute (MB)", " ".join(per_minute))
        second_half = [x for x in size_samples if x[0] >= seconds / 2]
        rss_half = [x for x in rss_samples if x[0] >= seconds / 2]
        store = "SQLite file + WAL" if standalone else "PostgreSQL database"
        sizes = [v for _, v in size_samples]
        kept = f"retention {retention} s" if prune else "retention off (30 d)"
        report.add(
            f"{store} over a {seconds} s soak, {kept} (first/max/last)",
            f"{sizes[0]:.1f}/{max(sizes):.1f}/{sizes[-1]:.1f} MB",
        )
        slope = _slope(second_half)
        report.add("store size slope over the second half", f"{slope:+.2f} MB/min", "flat")
        values = [v for _, v in rss_samples]
        report.add(
            "serve RSS (min/max/last)", f"{min(values):.0f}/{max(values):.0f}/{values[-1]:.0f} MB"
        )
        report.add("RSS slope over the second half", f"{_slope(rss_half):+.2f} MB/min", "flat")
        before = [latency * 1000 for at, latency in answers if at < retention]
        after = [latency * 1000 for at, latency in answers if at >= seconds / 2]
        for label, chosen in (("before pruning (first minute)", before), ("second half", after)):
            if chosen:
                report.add(
                    f"accept latency, {label}: p50/p99",
                    f"{pct(chosen, 0.5):.1f}/{pct(chosen, 0.99):.1f} ms",
                    "unchanged",
                )
        left = await _states(s, sqlite_path)
        report.add("deliveries left at the end, by state", json.dumps(left))


async def _autovacuum(s: Stack) -> bool:
    connection = await asyncpg.connect(s.database_url)
    try:
        return bool(await connection.fetchval("SHOW autovacuum") == "on")
    finally:
        await connection.close()


async def _vacuum_every(s: Stack, seconds: float) -> None:
    connection = await asyncpg.connect(s.database_url)
    try:
        while True:
            await asyncio.sleep(seconds)
            await connection.execute("VACUUM deliveries, notifications, group_threads, acks")
    finally:
        await connection.close()


async def _states(s: Stack, sqlite_path: Path | None) -> dict[str, int]:
    if sqlite_path is None:
        return await s.states()
    db = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT state, count(*) FROM deliveries GROUP BY 1").fetchall()
    finally:
        db.close()
    return {state: n for state, n in rows}


async def retention(report: Report, quick: bool, soak_seconds: int) -> None:
    await _retention_soak(report, quick, soak_seconds, standalone=False)


async def retention_sqlite(report: Report, quick: bool, soak_seconds: int) -> None:
    await _retention_soak(report, quick, soak_seconds, standalone=True)


async def retention_off(report: Report, quick: bool, soak_seconds: int) -> None:
    await _retention_soak(report, quick, soak_seconds, standalone=False, prune=False)


async def retention_off_sqlite(report: Report, quick: bool, soak_seconds: int) -> None:
    await _retention_soak(report, quick, soak_seconds, standalone=True, prune=False)


async def versus(report: Report, quick: bool) -> None:
    count = 30 if quick else 100
    chat = -1001
    for path in ("alertmanager telegram_configs", "alertmanager -> alertbridge"):
        async with stack(enforce_rate_limits=True) as s:
            if not path.endswith("telegram_configs"):
                s.config["rate_limits"] = {"enabled": True}
                await s.start("serve")
            am = Alertmanager(
                s.workdir / "am",
                None if path.endswith("telegram_configs") else f"{s.url}/alertmanager",
                group_wait="0s",
            )
            if path.endswith("telegram_configs"):
                am.use_receiver(
                    {
                        "telegram_configs": [
                            {
                                "api_url": s.telegram.url,
                                "bot_token": TOKEN,
                                "chat_id": chat,
                                "parse_mode": "",
                                "send_resolved": True,
                            }
                        ]
                    }
                )
            await am.start()
            try:
                fired: dict[str, float] = {}
                for i in range(count):
                    name = f"Vs{i:04d}"
                    fired[name] = time.monotonic()
                    await am.fire(am_alert(name, severity="warning"))
                await until(lambda: _received(s.telegram, count), 60 if quick else 180)
            finally:
                await am.stop()
            arrived: dict[str, float] = {}
            for c in s.telegram.calls:
                if c.method == "sendMessage" and c.response and c.response.get("ok"):
                    for name in fired:
                        if name in c.params.get("text", ""):
                            arrived.setdefault(name, c.at)
            lat = [(arrived[n] - fired[n]) * 1000 for n in arrived]
            sends = sum(c.method == "sendMessage" for c in s.telegram.calls)
            report.add(f"[{path}] alerts shown / fired", f"{len(arrived)} / {count}")
            if lat:
                report.add(
                    f"[{path}] fire -> Telegram p50 / p99",
                    f"{pct(lat, 0.5):.0f} / {pct(lat, 0.99):.0f} ms",
                )
            report.add(f"[{path}] 429s / sendMessage calls", f"{s.telegram.rate_limited} / {sends}")


async def _received(telegram: TelegramDouble, count: int) -> bool:
    ok = [
        c
        for c in telegram.calls
        if c.method == "sendMessage" and c.response and c.response.get("ok")
    ]
    return len(ok) >= count or sum(c.params.get("text", "").count("Vs") for c in ok) >= count


SCENARIOS = [
    "ingest",
    "e2e",
    "worker",
    "storm",
    "rss",
    "retention",
    "retention_sqlite",
    "retention_off",
    "retention_off_sqlite",
    "versus",
    "producer_single",
    "producer_batch",
    "producer_status",
    "ingress",  # tests/bench/ingress.py
]
#: The soaks: they take ``--soak-seconds``.
SOAKS = {"rss", "retention", "retention_sqlite", "retention_off", "retention_off_sqlite"}


# Scenarios in their own modules (they import this one's plumbing, so after it);
# run() finds them by name in this module's globals.
from tests.bench.ingress import ingress  # noqa: E402, F401
from tests.bench.producers import (  # noqa: E402, F401
    producer_batch,
    producer_single,
    producer_status,
)


async def run(only: list[str], quick: bool, soak_seconds: int) -> list[Report]:
    reports = []
    for name in only:
        print(f"\n== {name}", flush=True)
        report = Report(name)
        reports.append(report)
        try:
            if name in SOAKS:
                await globals()[name](report, quick, soak_seconds)
            else:
                await globals()[name](report, quick)
        except Exception as exc:  # noqa: BLE001 - one scenario's crash is a figure too
            report.add("CRASHED", f"{type(exc).__name__}: {exc}"[:120])
    return reports
