"""Fault injection: the guarantees hold when the parts around the bridge fail.

Each test breaks one thing for real (kill -9 a worker process, restart the
broker, partition the database or the Bot API) and then checks the ledger:
every delivery accounted for, no message sent twice outside `ambiguous`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys

import asyncpg
import pytest
import yaml

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import (
    REPO,
    build_config,
    config_dict,
    start_bridge,
    states,
    wait_until,
)
from tests.payloads import alert, webhook
from tests.tcp_proxy import TcpProxy

NAME = re.compile(r"Storm\d{4}")


async def all_settled(database_url: str, total: int, timeout: float = 90) -> dict[str, int]:
    async def done() -> bool:
        counts = await states(database_url)
        busy = sum(counts.get(s, 0) for s in ("queued", "sending", "retry"))
        return sum(counts.values()) == total and busy == 0

    await wait_until(done, timeout=timeout, interval=0.2)
    return await states(database_url)


def start_worker_process(config_path: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "worker",
            "--config",
            config_path,
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        # The config's listen port is 0: /healthz and /metrics on a port of its own.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


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
            counts = await all_settled(database_url, total)
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

    assert await all_settled(database_url, total, timeout=120) == {"delivered": total}
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
        assert await all_settled(database_url, 1) == {"delivered": 1}
    finally:
        await bridge.shutdown()
        await proxy.stop()
    assert len(telegram.sent_messages()) == 1


async def test_a_timeout_after_the_request_was_written_is_ambiguous(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    telegram.hang_next(1, seconds=3.0)  # longer than request_timeout (2s)
    await bridge.post("/alertmanager", webhook(alert("Slow")))
    assert await all_settled(database_url, 1) == {"ambiguous": 1}
    assert len(telegram.sent_messages()) == 1
