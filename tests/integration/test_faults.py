"""Fault injection: the guarantees hold when the parts around the bridge fail.

Each test breaks one thing for real (kill -9 a worker process, restart the
broker, partition the database or the Bot API) and then checks the ledger:
every delivery accounted for, no message sent twice outside `ambiguous`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
import yaml

from bridge.config import AmqpConfig
from bridge.errors import StoreUnavailable
from bridge.queue.amqp import shard_queue
from bridge.sandbox.botapi import TelegramDouble
from bridge.store import PostgresStore
from tests.conftest import (
    AMQP_URL,
    PG_ADMIN_URL,
    build_config,
    config_dict,
    settled,
    start_bridge,
    states,
    wait_until,
)
from tests.payloads import alert, webhook
from tests.processes import BRIDGE_LISTENING, Output, spawn_bridge
from tests.tcp_proxy import TcpProxy

NAME = re.compile(r"Storm\d{4}")


def start_worker_process(config_path: str) -> subprocess.Popen[bytes]:
    # The config's listen port is 0: /healthz and /metrics on a port of its own.
    return spawn_bridge(Path(config_path), "worker", log_level="warning")


async def post_all(bridge, payloads, concurrency: int = 20) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(payload) -> None:
        async with gate:
            answer = await bridge.post("/alertmanager", payload)
            assert answer.status_code == 200, answer.text

    await asyncio.gather(*(one(p) for p in payloads))


def messages_by_alert(telegram: TelegramDouble) -> collections.Counter[str]:
    return collections.Counter(
        m.group(0) for msg in telegram.sent_messages() if (m := NAME.search(msg.text))
    )


@pytest.mark.slow
async def test_kill_9_of_a_worker_mid_stream_loses_nothing(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    telegram.latency = 0.03
    data = config_dict(database_url, amqp_names, telegram.url)
    data["amqp"]["prefetch"] = 4
    config_path = tmp_path / "alertbridge.yml"
    config_path.write_text(yaml.safe_dump(data))
    receiver = await start_bridge(build_config(data), worker=False)
    total = 500

    victim = start_worker_process(str(config_path))
    try:
        await post_all(receiver, [webhook(alert(f"Storm{i:04d}")) for i in range(total)])
        await wait_until(lambda: len(telegram.sent_messages()) >= 100, timeout=60)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        sent_before_restart = len(telegram.sent_messages())
        assert sent_before_restart < total, "the stream ended before the kill; test proves nothing"

        survivor = start_worker_process(str(config_path))
        try:
            counts = await settled(database_url, total, timeout=90)
        finally:
            survivor.terminate()
            survivor.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        await receiver.shutdown()

    assert set(counts) <= {"delivered", "ambiguous"}, counts
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT state, text FROM deliveries")
    finally:
        await connection.close()
    sent = messages_by_alert(telegram)
    for row in rows:
        name = NAME.search(row["text"]).group(0)
        if row["state"] == "delivered":
            assert sent[name] == 1, f"{name}: delivered but sent {sent[name]} times"
        else:  # ambiguous: sent at most once, never twice
            assert sent[name] <= 1, f"{name}: ambiguous and sent {sent[name]} times"
    # Only the deliveries in flight at the kill can be ambiguous.
    assert counts.get("ambiguous", 0) <= 4


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.slow
async def test_rabbitmq_restart_mid_stream_loses_nothing(
    bridge_factory, telegram: TelegramDouble, database_url
) -> None:
    bridge = await bridge_factory()
    total = 200
    payloads = [webhook(alert(f"Storm{i:04d}")) for i in range(total)]

    await post_all(bridge, payloads[:80])
    rabbitmqctl("stop_app")
    try:
        # Accepted while the broker is down: stored, published later by the scheduler.
        await post_all(bridge, payloads[80:140])
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    await post_all(bridge, payloads[140:])

    assert await settled(database_url, total, timeout=120) == {"delivered": total}
    sent = messages_by_alert(telegram)
    assert len(sent) == total and set(sent.values()) == {1}


async def test_database_unreachable_answers_503_and_stores_nothing(
    database_url, amqp_names, telegram
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    proxied = re.sub(r"@127\.0\.0\.1(:5432)?/", f"@127.0.0.1:{proxy.port}/", database_url)
    bridge = await start_bridge(build_config(config_dict(proxied, amqp_names, telegram.url)))
    try:
        await proxy.cut()
        answer = await bridge.post("/alertmanager", webhook(alert("DbDown")))
        assert answer.status_code == 503
        assert "retry" in answer.json()["error"]

        await proxy.restore()
        answer = await bridge.post("/alertmanager", webhook(alert("DbDown")))
        assert answer.status_code == 200
        await wait_until(lambda: len(telegram.sent_messages()) == 1)
    finally:
        await bridge.shutdown()
        await proxy.stop()
    assert await states(database_url) == {"delivered": 1}


async def test_bot_api_unreachable_is_retried_until_it_is_back(
    database_url, amqp_names, telegram: TelegramDouble
) -> None:
    port = int(telegram.url.rsplit(":", 1)[1])
    proxy = TcpProxy("127.0.0.1", port)
    await proxy.start()
    await proxy.cut()  # nothing listens: connection refused, the request never left
    data = config_dict(database_url, amqp_names, f"http://127.0.0.1:{proxy.port}")
    bridge = await start_bridge(build_config(data))
    try:
        await bridge.post("/alertmanager", webhook(alert("ApiDown")))
        await asyncio.sleep(1.0)
        assert await states(database_url) == {"retry": 1}
        await proxy.restore()
        assert await settled(database_url, 1) == {"delivered": 1}
    finally:
        await bridge.shutdown()
        await proxy.stop()
    assert len(telegram.sent_messages()) == 1


async def test_a_timeout_after_the_request_was_written_is_ambiguous(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    telegram.hang_next(1, seconds=3.0)  # longer than request_timeout (2s)
    await bridge.post("/alertmanager", webhook(alert("Slow")))
    assert await settled(database_url, 1) == {"ambiguous": 1}
    assert len(telegram.sent_messages()) == 1


@contextlib.asynccontextmanager
async def backend_killer(database_url: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """What a PostgreSQL restart does to every session, for this test's database only.

    pg_terminate_backend sends each backend the SIGTERM a fast shutdown sends:
    it answers FATAL 57P01 and closes. The server stays up for everyone else.
    """
    admin = await asyncpg.connect(PG_ADMIN_URL)
    name = database_url.rsplit("/", 1)[1]

    async def kill() -> int:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        )

    try:
        yield kill
    finally:
        await admin.close()


async def test_connections_a_restart_terminates_are_store_unavailable(database_url) -> None:
    store = await PostgresStore.connect(database_url)
    await store.migrate()
    seen: collections.Counter[str] = collections.Counter()

    async def answers() -> bool:
        try:
            await store.state_counts()
        except StoreUnavailable:
            return False
        return True

    try:
        async with backend_killer(database_url) as kill:
            for _ in range(40):
                await wait_until(answers, timeout=10)  # a live connection waits in the pool
                assert await kill() >= 1
                try:
                    await store.state_counts()
                except StoreUnavailable as exc:
                    seen[type(exc.__cause__).__name__] += 1
                # A genuine bug would have raised something else and ended the test.
    finally:
        await store.close()
    assert seen, "no call met a terminated connection; the test proved nothing"


def metric(bridge, name: str, **labels: str) -> float:
    return bridge.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_the_receiver_answers_503_never_500_while_the_database_restarts(
    bridge_factory, database_url
) -> None:
    bridge = await bridge_factory()
    answers: collections.Counter[int] = collections.Counter()
    refused: list[dict] = []
    posting = True

    async def post_until_stopped(poster: int) -> None:
        n = 0
        while posting:
            payload = webhook(alert(f"Restart{poster:02d}x{n:05d}"))
            n += 1
            answer = await bridge.post("/alertmanager", payload)
            answers[answer.status_code] += 1
            if answer.status_code != 200:
                refused.append(payload)

    posters = [asyncio.create_task(post_until_stopped(i)) for i in range(8)]
    try:
        async with backend_killer(database_url) as kill:
            # Enough requests meet a terminated connection to see how each is answered.
            while sum(n for status, n in answers.items() if status != 200) < 30:
                accepted = answers[200]
                await kill()
                await wait_until(lambda n=accepted: answers[200] > n, timeout=20)  # back
    finally:
        posting = False
        await asyncio.gather(*posters)

    assert set(answers) <= {200, 503}, answers
    # Alertmanager retries a 503: then it is stored (or found stored: a duplicate).
    for payload in refused:
        assert (await bridge.post("/alertmanager", payload)).status_code == 200
    connection = await asyncpg.connect(database_url)
    try:
        stored = await connection.fetchval("SELECT count(*) FROM notifications")
    finally:
        await connection.close()
    assert stored == answers[200] + len(refused)


async def test_telegram_s_answer_is_recorded_through_a_database_restart(
    bridge_factory, telegram: TelegramDouble, database_url
) -> None:
    # Under `resend`, an answer the worker failed to record would be sent twice.
    bridge = await bridge_factory(delivery={"on_ambiguous": "resend", "lease": "5s"})
    telegram.hang_next(1, seconds=0.5)  # Telegram has it; its answer comes 0.5 s later
    await bridge.post("/alertmanager", webhook(alert("Restart")))
    await wait_until(lambda: len(telegram.sent_messages()) == 1)

    def record_waits() -> float:
        return metric(
            bridge, "alertbridge_dependency_waits_total", dependency="store", stage="record"
        )

    loop = asyncio.get_running_loop()
    give_up = loop.time() + 3.0  # well inside the 5 s lease
    async with backend_killer(database_url) as kill:
        # Every session of the database is killed as soon as it appears, until the
        # worker has had to wait to record the answer (or, without that, give_up).
        while record_waits() < 2 and loop.time() < give_up:
            await kill()

    assert await settled(database_url, 1, timeout=30) == {"delivered": 1}
    assert len(telegram.sent_messages()) == 1
    assert record_waits() >= 2
    assert metric(bridge, "alertbridge_deliveries_ambiguous_total", policy="resend") == 0


def proxied(database_url: str, proxy: TcpProxy) -> str:
    return re.sub(r"@127\.0\.0\.1(:5432)?/", f"@127.0.0.1:{proxy.port}/", database_url)


async def queue_depth(queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_a_claim_that_meets_a_store_outage_waits_and_is_never_dead_lettered(
    database_url, amqp_names, telegram: TelegramDouble
) -> None:
    # The receiver reaches the database directly; the worker through a proxy
    # that the test cuts, so only the worker's claim meets the outage.
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    receiver = await start_bridge(
        build_config(config_dict(database_url, amqp_names, telegram.url)), worker=False
    )
    worker = await start_bridge(
        build_config(config_dict(proxied(database_url, proxy), amqp_names, telegram.url)),
        receiver=False,
    )
    dead = f"{amqp_names['queue']}.dead"
    try:
        await proxy.cut()
        assert (
            await receiver.post("/alertmanager", webhook(alert("ClaimLater")))
        ).status_code == 200

        async def held_or_dead() -> bool:
            claim_waits = metric(
                worker, "alertbridge_dependency_waits_total", dependency="store", stage="claim"
            )
            return claim_waits >= 3 or await queue_depth(dead) > 0

        await wait_until(held_or_dead, timeout=30)
        await proxy.restore()
        assert await settled(database_url, 1) == {"delivered": 1}
    finally:
        await worker.shutdown()
        await receiver.shutdown()
        await proxy.stop()
    assert await queue_depth(dead) == 0
    assert metric(worker, "alertbridge_dead_letters_total", reason="delivery_limit") == 0
    assert len(telegram.sent_messages()) == 1


async def test_a_dead_lettered_wake_up_is_counted_logged_and_its_delivery_still_made(
    database_url, amqp_names, telegram: TelegramDouble, caplog: pytest.LogCaptureFixture
) -> None:
    data = config_dict(database_url, amqp_names, telegram.url)
    data["amqp"]["delivery_limit"] = 2
    receiver = await start_bridge(build_config(data), worker=False)
    try:
        answer = await receiver.post("/alertmanager", webhook(alert("DeadLettered")))
        [delivery_id] = answer.json()["deliveries"]
    finally:
        await receiver.shutdown()

    # A consumer that never acks, as a broken worker would: RabbitMQ dead-letters
    # the wake-up once its delivery limit is reached.
    dead = f"{amqp_names['queue']}.dead"

    async def never_ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.nack(requeue=True)

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        for shard in range(AmqpConfig().shards):
            queue = await channel.declare_queue(
                shard_queue(amqp_names["queue"], shard), passive=True
            )
            await queue.consume(never_ack)
        await wait_until(lambda: queue_depth(dead), timeout=30, interval=0.1)

    caplog.set_level(logging.ERROR, logger="bridge.scheduler")
    bridge = await start_bridge(build_config(data), receiver=False)
    try:
        assert await settled(database_url, 1) == {"delivered": 1}
        await wait_until(
            lambda: metric(bridge, "alertbridge_dead_letters_total", reason="delivery_limit") == 1
        )
    finally:
        await bridge.shutdown()
    assert await queue_depth(dead) == 0
    assert len(telegram.sent_messages()) == 1
    [record] = [r for r in caplog.records if getattr(r, "delivery_id", None) == delivery_id]
    assert f"delivery {delivery_id}" in record.getMessage()


async def get(bridge, path: str):
    return await bridge.client.get(path)


async def test_a_bridge_started_before_postgresql_waits_for_it_then_serves(
    database_url, amqp_names, telegram: TelegramDouble
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.cut()  # PostgreSQL is not there yet
    config = build_config(config_dict(proxied(database_url, proxy), amqp_names, telegram.url))
    bridge = await start_bridge(config)  # returns once /healthz answers
    try:
        ready = await get(bridge, "/readyz")
        assert ready.status_code == 503 and "PostgreSQL" in ready.json()["problems"][0]
        refused = await bridge.post("/alertmanager", webhook(alert("EarlyBird")))
        assert refused.status_code == 503  # Alertmanager keeps it and retries
        await wait_until(
            lambda: (
                metric(
                    bridge, "alertbridge_dependency_waits_total", dependency="store", stage="start"
                )
                >= 2
            )
        )
        assert not bridge.task.done()

        await proxy.restore()
        await wait_until(lambda: _status(bridge, "/readyz", 200), timeout=30)
        answer = await bridge.post("/alertmanager", webhook(alert("EarlyBird")))
        assert answer.status_code == 200
        assert await settled(database_url, 1) == {"delivered": 1}
    finally:
        await bridge.shutdown()
        await proxy.stop()
    assert len(telegram.sent_messages()) == 1


async def test_a_bridge_started_before_rabbitmq_waits_for_it_then_serves(
    database_url, amqp_names, telegram: TelegramDouble
) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    await proxy.cut()
    data = config_dict(database_url, amqp_names, telegram.url)
    data["amqp_url"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    bridge = await start_bridge(build_config(data))
    try:
        ready = await get(bridge, "/readyz")
        assert ready.status_code == 503 and "RabbitMQ" in ready.json()["problems"][0]
        await wait_until(
            lambda: (
                metric(
                    bridge, "alertbridge_dependency_waits_total", dependency="broker", stage="start"
                )
                >= 2
            )
        )
        await proxy.restore()
        await wait_until(lambda: _status(bridge, "/readyz", 200), timeout=30)
        answer = await bridge.post("/alertmanager", webhook(alert("EarlyBroker")))
        assert answer.status_code == 200
        assert await settled(database_url, 1) == {"delivered": 1}
    finally:
        await bridge.shutdown()
        await proxy.stop()
    assert len(telegram.sent_messages()) == 1


async def _status(bridge, path: str, status: int) -> bool:
    return (await get(bridge, path)).status_code == status


async def test_sigterm_while_waiting_for_postgresql_exits_cleanly(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.cut()
    data = config_dict(proxied(database_url, proxy), amqp_names, telegram.url, listen="127.0.0.1:0")
    config_path = tmp_path / "alertbridge.yml"
    config_path.write_text(yaml.safe_dump(data))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = spawn_bridge(config_path, "worker", stdout=subprocess.PIPE, stderr=log)
        assert worker.stdout is not None
        output = Output(worker.stdout, BRIDGE_LISTENING)
        try:
            # It serves its probes while it waits: the line comes before PostgreSQL.
            listen = await output.address(timeout=60)
            async with httpx.AsyncClient(base_url=f"http://{listen}") as client:

                async def alive_not_ready() -> bool:
                    assert worker.poll() is None, "the worker exited instead of waiting"
                    try:
                        healthz = await client.get("/healthz")
                        readyz = await client.get("/readyz")
                    except httpx.TransportError:
                        return False
                    return healthz.status_code == 200 and readyz.status_code == 503

                await wait_until(alive_not_ready, timeout=60, interval=0.1)
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
        finally:
            if worker.poll() is None:
                worker.kill()
            await proxy.stop()
    assert code == 0
    text = log_path.read_text()
    assert "PostgreSQL is not available (attempt 1)" in text, text
    assert "Traceback" not in text, text
