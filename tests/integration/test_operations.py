"""What an operator relies on: readiness, reload, metrics that count exactly,
a SIGTERM that loses and doubles nothing, and logs a machine can read."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import re
import signal

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import (
    TOKEN,
    build_config,
    config_dict,
    start_bridge,
    states,
    wait_until,
)
from tests.payloads import alert, webhook
from tests.processes import bridge_process
from tests.tcp_proxy import TcpProxy


async def test_readyz_follows_the_database(database_url, amqp_names, telegram) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    proxied = re.sub(r"@127\.0\.0\.1(:5432)?/", f"@127.0.0.1:{proxy.port}/", database_url)
    bridge = await start_bridge(build_config(config_dict(proxied, amqp_names, telegram.url)))
    try:
        ready = await bridge.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["broker_connected"]
        await proxy.cut()
        unready = await bridge.client.get("/readyz")
        assert unready.status_code == 503 and unready.json()["problems"]
        assert (await bridge.client.get("/healthz")).status_code == 200  # alive all the same
        await proxy.restore()
        await wait_until(lambda: _status(bridge.client, "/readyz"), timeout=15, interval=0.2)
    finally:
        await bridge.shutdown()
        await proxy.stop()


async def _status(client: httpx.AsyncClient, path: str) -> bool:
    return (await client.get(path)).status_code == 200


async def test_reload_swaps_routes_and_keeps_the_old_config_on_error(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    data = config_dict(database_url, amqp_names, telegram.url)
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(data))
    bridge = await start_bridge(build_config(data), config_path=path)
    try:
        data["route"] = {"chats": [-2002]}
        path.write_text(yaml.safe_dump(data))
        answer = await bridge.post("/-/reload")
        assert answer.status_code == 200, answer.text

        broken_text = yaml.safe_dump(data) + "route_typo: 1\n"
        path.write_text(broken_text)
        broken = await bridge.post("/-/reload")
        assert broken.status_code == 500
        line = len(broken_text.splitlines())
        assert f"{path}:{line}: route_typo: unknown setting" in broken.json()["error"]

        await bridge.post("/alertmanager", webhook(alert("AfterReload")))
        await telegram.wait_for_messages(1)
    finally:
        await bridge.shutdown()
    assert [m.chat_id for m in telegram.sent_messages()] == [-2002]


async def test_a_reload_applies_rate_limits_at_once(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    data = config_dict(database_url, amqp_names, telegram.url)  # rate limits off
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(data))
    bridge = await start_bridge(build_config(data), config_path=path)
    try:
        data["rate_limits"] = {"enabled": True, "per_chat_per_second": 0.8}
        path.write_text(yaml.safe_dump(data))
        answer = await bridge.post("/-/reload")
        assert answer.status_code == 200, answer.text
        assert answer.json()["applied"] == [
            "rate_limits.enabled",
            "rate_limits.per_chat_per_second",
        ]
        for i in range(3):
            await bridge.post("/alertmanager", webhook(alert(f"Paced{i}")))
        await telegram.wait_for_messages(3)
    finally:
        await bridge.shutdown()
    sent = [
        c.at
        for c in telegram.calls
        if c.method == "sendMessage" and c.response is not None and c.response["ok"]
    ]
    # One every 1.25 s to the chat (less a margin); unlimited, they would go out at once.
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(sent))


async def test_a_reload_names_the_settings_that_need_a_restart(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path, caplog
) -> None:
    data = config_dict(database_url, amqp_names, telegram.url)
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(data))
    bridge = await start_bridge(build_config(data), config_path=path)
    try:
        data["listen"] = "127.0.0.1:9"  # never bound: listen waits for a restart
        data["amqp"]["shards"] = 4
        data["delivery"]["dedup_window"] = "1m"
        path.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="bridge.service"):
            answer = await bridge.post("/-/reload")  # served where it was: listen waits
        assert answer.status_code == 200, answer.text
        assert answer.json()["needs_restart"] == ["listen", "amqp.shards"]
        assert answer.json()["applied"] == ["delivery.dedup_window"]
        [logged] = [r for r in caplog.records if "config reloaded" in r.getMessage()]
        assert logged.levelno == logging.WARNING
        assert "applied: delivery.dedup_window" in logged.getMessage()
        assert "need a restart: listen, amqp.shards" in logged.getMessage()
    finally:
        await bridge.shutdown()


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("alertbridge_") and not sample.name.endswith("_created"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_a_known_sequence_exactly(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    telegram.block_chat(-1001)
    await bridge.post("/alertmanager", webhook(alert("Blocked")))
    await wait_until(lambda: len(telegram.calls) >= 1)
    await wait_until(lambda: _done(database_url, 1))
    telegram._blocked.clear()

    telegram.fail_next(1)
    await bridge.post("/alertmanager", webhook(alert("Flaky")))
    await bridge.post("/alertmanager", webhook(alert("Flaky")))  # duplicate
    await bridge.post("/alertmanager", content=b"{", headers={"content-type": "application/json"})
    await wait_until(lambda: _done(database_url, 2))

    m = scrape((await bridge.client.get("/metrics")).text)
    source = (("source", "alertmanager"),)
    assert m[("alertbridge_webhooks_received_total", (("outcome", "accepted"), *source))] == 2
    assert m[("alertbridge_webhooks_received_total", (("outcome", "duplicate"), *source))] == 1
    assert m[("alertbridge_webhooks_received_total", (("outcome", "rejected_400"), *source))] == 1
    assert m[("alertbridge_deliveries_created_total", ())] == 2
    finished = "alertbridge_deliveries_finished_total"
    assert m[(finished, (("reason", "forbidden"), ("state", "failed")))] == 1
    assert m[(finished, (("reason", "ok"), ("state", "delivered")))] == 1
    assert m[("alertbridge_delivery_retries_total", (("reason", "server_error"),))] == 1
    assert m[("alertbridge_telegram_request_seconds_count", (("outcome", "sent"),))] == 1
    assert m[("alertbridge_webhook_to_delivered_seconds_count", ())] == 1


async def _done(database_url: str, total: int) -> bool:
    counts = await states(database_url)
    return sum(counts.values()) == total and not {"queued", "sending", "retry"} & set(counts)


async def test_sigterm_mid_stream_loses_nothing_and_doubles_nothing(
    database_url, amqp_names, telegram: TelegramDouble
) -> None:
    telegram.latency = 0.05
    data = config_dict(database_url, amqp_names, telegram.url)
    data["amqp"]["prefetch"] = 2  # about 40 sends/s: the stream outlasts the posting
    total = 200
    async with bridge_process(data, log_level="warning") as served:
        server = served.process
        async with httpx.AsyncClient(base_url=served.url) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/alertmanager", json=webhook(alert(f"Term{i:04d}")))
                    for i in range(total)
                )
            )
            assert {a.status_code for a in answers} == {200}
        await wait_until(lambda: len(telegram.sent_messages()) >= 20)
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 30) == 0
    stopped_with = len(telegram.sent_messages())
    assert stopped_with < total, "the stream ended before SIGTERM; the test proves nothing"
    counts = await states(database_url)
    assert counts.get("sending", 0) == 0 and "ambiguous" not in counts

    async with bridge_process(data, log_level="warning"):
        await telegram.wait_for_messages(total, timeout=60)
        await asyncio.sleep(0.5)
    assert await states(database_url) == {"delivered": total}
    names = collections.Counter(
        m.group(0) for msg in telegram.sent_messages() if (m := re.search(r"Term\d{4}", msg.text))
    )
    assert len(names) == total and set(names.values()) == {1}


async def test_json_logs_name_the_delivery_and_chat_and_no_secret(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    # Trust auth accepts any password, so a real one can be in the URL and must not be logged.
    data = config_dict(
        database_url.replace("postgres@", "postgres:pg-pw-4242@"), amqp_names, telegram.url
    )
    telegram.block_chat(-1001)  # the delivery fails: an error line about it
    log_file = tmp_path / "bridge.log"
    with log_file.open("wb") as stderr:
        async with bridge_process(data, log_format="json", stderr=stderr) as served:
            async with httpx.AsyncClient(base_url=served.url) as client:
                answer = await client.post("/alertmanager", json=webhook(alert("Logged")))
                assert answer.status_code == 200
            await wait_until(lambda: _done(database_url, 1))
    text = log_file.read_text()
    records = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    [failed] = [r for r in records if r.get("delivery_id") and r["level"] == "error"]
    assert failed["chat_id"] == -1001
    assert failed["group_key"] == webhook(alert("Logged"))["groupKey"]
    assert "forbidden" in failed["message"]
    assert any(r.get("notification") and r.get("source") == "alertmanager" for r in records)
    assert "pg-pw-4242" not in text and TOKEN not in text


async def test_backlog_gauges_follow_the_store(bridge, telegram: TelegramDouble, database_url):
    telegram.fail_next(10_000)  # Telegram is down: everything waits to be retried
    for name in ("Backlog1", "Backlog2", "Backlog3"):
        await bridge.post("/alertmanager", webhook(alert(name)))

    async def gauges() -> tuple[float, float]:
        m = scrape((await bridge.client.get("/metrics")).text)
        return m[("alertbridge_queue_depth", ())], m[("alertbridge_oldest_queued_seconds", ())]

    async def backed_up() -> bool:
        depth, oldest = await gauges()
        return depth == 3 and oldest >= 1.0

    await wait_until(backed_up, timeout=15)
    telegram._faults.clear()  # Telegram is back

    async def drained() -> bool:
        return await gauges() == (0, 0)

    await wait_until(drained, timeout=15)
    assert len(telegram.sent_messages()) == 3


async def test_a_worker_alone_serves_probes_metrics_and_reload(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    data = config_dict(database_url, amqp_names, telegram.url)
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(data))
    worker = await start_bridge(build_config(data), receiver=False, config_path=path)
    try:
        assert (await worker.client.get("/healthz")).status_code == 200
        ready = await worker.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["broker_connected"] is True
        assert "alertbridge_queue_depth" in (await worker.client.get("/metrics")).text
        # Probes, metrics and reload only: a worker takes no webhooks.
        assert (await worker.post("/alertmanager", webhook(alert("Nope")))).status_code == 404
        data["delivery"]["max_attempts"] = 3
        path.write_text(yaml.safe_dump(data))
        reloaded = await worker.post("/-/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["applied"] == ["delivery.max_attempts"]
    finally:
        await worker.shutdown()
