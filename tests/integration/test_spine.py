"""The spine, end to end: an Alertmanager webhook becomes exactly one Telegram
message, through real PostgreSQL and RabbitMQ and the strict Telegram double."""

from __future__ import annotations

import asyncio
import time

import pytest
import yaml

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import settled, states, wait_until
from tests.payloads import alert, webhook


async def test_the_same_webhook_twice_is_one_message(bridge, telegram, database_url) -> None:
    payload = webhook(alert("DiskFull"))
    first = await bridge.post("/alertmanager", payload)
    second = await bridge.post("/alertmanager", payload)

    assert first.status_code == 200 and not first.json()["duplicate"]
    assert second.status_code == 200 and second.json()["duplicate"]
    assert await settled(database_url, 1) == {"delivered": 1}
    assert len(telegram.sent_messages()) == 1


async def test_two_alertmanager_replicas_yield_one_message(bridge, telegram, database_url) -> None:
    alerts = (alert("NodeDown", labels={"instance": "db-1"}),)
    replica_a = webhook(*alerts, external_url="http://alertmanager-0:9093")
    replica_b = webhook(*alerts, external_url="http://alertmanager-1:9093")

    answers = await asyncio.gather(
        *(bridge.post("/alertmanager", p) for p in (replica_a, replica_b, replica_a, replica_b))
    )

    assert [a.status_code for a in answers] == [200] * 4
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    assert await settled(database_url, 1) == {"delivered": 1}
    assert len(telegram.sent_messages()) == 1


async def test_same_content_after_the_dedup_window_is_delivered_again(
    bridge_factory, telegram, database_url
) -> None:
    bridge = await bridge_factory(delivery={"dedup_window": "1s"})
    payload = webhook(alert("CertExpiring"))

    assert not (await bridge.post("/alertmanager", payload)).json()["duplicate"]
    assert (await bridge.post("/alertmanager", payload)).json()["duplicate"]
    await asyncio.sleep(1.2)
    reminder = (await bridge.post("/alertmanager", payload)).json()

    assert not reminder["duplicate"] and reminder["occurrence"] == 2
    assert await settled(database_url, 2) == {"delivered": 2}
    assert len(telegram.sent_messages()) == 2


async def test_three_alerts_to_two_chats_arrive_escaped(bridge_factory, telegram, database_url):
    bridge = await bridge_factory(
        route={
            "chats": [-1001],
            "routes": [
                {"matchers": ['severity="critical"'], "chats": [-1002], "continue": True},
                {"matchers": ['service="api"'], "chats": [-1003]},
            ],
        }
    )
    nasty = {"service": "api", "path": "<b>/api</b>", "query": 'a&b "quoted"'}
    payload = webhook(
        alert("ApiErrors", severity="critical", labels={**nasty, "pod": "api-1"}),
        alert("ApiErrors", severity="critical", labels={**nasty, "pod": "api-2"}),
        alert("ApiErrors", severity="critical", labels={**nasty, "pod": "api-3"}),
    )

    assert (await bridge.post("/alertmanager", payload)).status_code == 200
    assert await settled(database_url, 2) == {"delivered": 2}

    # Both routes match: the first has continue: true, so the second is tried too.
    sent = telegram.sent_messages()
    assert sorted(m.chat_id for m in sent) == [-1003, -1002]
    for message in sent:
        # The double accepted the HTML; what a person sees is the raw label text.
        assert "<b>/api</b>" in message.text
        assert 'a&b "quoted"' in message.text
        for pod in ("api-1", "api-2", "api-3"):
            assert pod in message.text


async def test_telegram_500_then_200_is_retried_and_delivered_once(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    telegram.fail_next(1, status=500, description="Internal Server Error")
    await bridge.post("/alertmanager", webhook(alert("Flaky")))

    assert await settled(database_url, 1) == {"delivered": 1}
    attempts = [c for c in telegram.calls if c.method == "sendMessage"]
    assert len(attempts) == 2
    assert len(telegram.sent_messages()) == 1


async def test_429_is_honoured_to_the_second(bridge, telegram: TelegramDouble, database_url):
    telegram.rate_limit_next(1, retry_after=2)
    await bridge.post("/alertmanager", webhook(alert("Throttled")))

    assert await settled(database_url, 1) == {"delivered": 1}
    first, second = [c for c in telegram.calls if c.method == "sendMessage"]
    assert second.at - first.at >= 2.0
    assert len(telegram.sent_messages()) == 1


async def test_403_blocked_fails_with_the_reason_and_no_retry(
    bridge, telegram: TelegramDouble, database_url, db
) -> None:
    telegram.block_chat(-1001)
    await bridge.post("/alertmanager", webhook(alert("Lonely")))

    assert await settled(database_url, 1) == {"failed": 1}
    row = await db.fetchrow("SELECT attempts, last_error FROM deliveries")
    assert row["attempts"] == 1
    assert "bot was blocked by the user" in row["last_error"]
    await asyncio.sleep(0.5)  # long enough for a wrong retry to show up
    assert len([c for c in telegram.calls if c.method == "sendMessage"]) == 1


async def test_dropped_after_accept_is_ambiguous_and_not_resent(
    bridge, telegram: TelegramDouble, database_url, db
) -> None:
    telegram.drop_after_accept_next(1)
    await bridge.post("/alertmanager", webhook(alert("Vanishing")))

    assert await settled(database_url, 1) == {"ambiguous": 1}
    assert len(telegram.sent_messages()) == 1  # Telegram has it; we must not send it again
    assert bridge.metrics.ambiguous.labels("assume_sent")._value.get() == 1
    row = await db.fetchrow("SELECT was_ambiguous, last_error FROM deliveries")
    assert row["was_ambiguous"] and "no answer" in row["last_error"]


async def test_dropped_after_accept_with_resend_policy_sends_again(
    bridge_factory, telegram: TelegramDouble, database_url, db
) -> None:
    bridge = await bridge_factory(delivery={"on_ambiguous": "resend"})
    telegram.drop_after_accept_next(1)
    await bridge.post("/alertmanager", webhook(alert("Vanishing")))

    assert await settled(database_url, 1) == {"delivered": 1}
    # The operator chose a possible duplicate over a possible loss: counted, visible.
    assert len(telegram.sent_messages()) == 2
    assert bridge.metrics.ambiguous.labels("resend")._value.get() == 1
    assert await db.fetchval("SELECT was_ambiguous FROM deliveries")


async def test_html_telegram_refuses_is_resent_once_as_plain_text(
    bridge, telegram: TelegramDouble, database_url, db
) -> None:
    await bridge.post("/alertmanager", webhook(alert("Plain")))
    await settled(database_url, 1)
    # Corrupt the stored text the way a broken custom template would: a '<'
    # that starts no tag Telegram knows (a bare '&' it would take as text).
    await db.execute("UPDATE deliveries SET text = '<b>Disk</b> full <3 more', state = 'retry'")
    await db.execute("UPDATE deliveries SET next_attempt_at = now(), republish_at = now()")

    await wait_until(lambda: len(telegram.sent_messages()) == 2)
    await settled(database_url, 1)
    row = await db.fetchrow("SELECT state, plain_text FROM deliveries")
    assert row["state"] == "delivered" and row["plain_text"]
    last = telegram.sent_messages()[-1]
    assert (last.text, last.parse_mode) == ("Disk full <3 more", None)


async def test_a_response_is_200_only_after_the_rows_are_committed(bridge, db) -> None:
    answer = await bridge.post("/alertmanager", webhook(alert("Committed")))
    ids = answer.json()["deliveries"]
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE id = ANY($1)", ids) == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"[1, 2]", {}, 422, "JSON object"),
        (b'{"version": "4"}', {}, 422, "groupKey"),
        (
            b'{"version":"4","groupKey":"g","status":"firing","receiver":"r",'
            b'"alerts":[{"status":"firing","labels":{"a":1}}]}',
            {},
            422,
            "alerts.0.labels.a",
        ),
        (
            b'{"version":"4","groupKey":"g","status":"burning","receiver":"r",'
            b'"alerts":[{"status":"firing","labels":{}}]}',
            {},
            422,
            "status",
        ),
        (b"{}" + b" " * (64 * 1024), {}, 413, "limit"),
    ],
    ids=["not-json", "not-object", "missing-fields", "wrong-type", "bad-enum", "oversized"],
)
async def test_bad_input_gets_a_clear_error_and_stores_nothing(
    bridge_factory, db, body, headers, status, says
) -> None:
    bridge = await bridge_factory(receiver={"max_body_bytes": 32 * 1024})
    answer = await bridge.post(
        "/alertmanager", content=body, headers={"content-type": "application/json", **headers}
    )
    assert answer.status_code == status
    assert says in answer.json()["error"]
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0
    assert await db.fetchval("SELECT count(*) FROM notifications") == 0


async def test_auth_is_required_when_configured(bridge_factory, db) -> None:
    bridge = await bridge_factory(receiver={"auth": {"bearer_token": "s3cret"}})
    payload = webhook(alert("Guarded"))

    missing = await bridge.post("/alertmanager", payload)
    wrong = await bridge.post("/alertmanager", payload, headers={"authorization": "Bearer nope"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0

    right = await bridge.post("/alertmanager", payload, headers={"authorization": "Bearer s3cret"})
    assert right.status_code == 200


async def test_basic_auth(bridge_factory) -> None:
    bridge = await bridge_factory(
        receiver={"auth": {"basic": {"username": "am", "password": "pw"}}}
    )
    payload = webhook(alert("Guarded"))
    assert (await bridge.post("/alertmanager", payload, auth=("am", "bad"))).status_code == 401
    assert (await bridge.post("/alertmanager", payload, auth=("am", "pw"))).status_code == 200


async def test_healthz(bridge) -> None:
    assert (await bridge.client.get("/healthz")).status_code == 200


async def test_graceful_stop_leaves_nothing_half_done(bridge, telegram, database_url) -> None:
    for i in range(30):
        await bridge.post("/alertmanager", webhook(alert(f"Stop{i}")))
    started = time.monotonic()
    await bridge.shutdown()
    assert time.monotonic() - started < 20
    counts = await states(database_url)
    assert counts.get("sending", 0) == 0
    assert sum(counts.values()) == 30
    # Whatever was delivered was sent once; the rest is still queued for the next start.
    assert counts.get("delivered", 0) == len(telegram.sent_messages())


async def test_grafana_and_generic_sources_are_delivered_like_alertmanager(
    bridge_factory, telegram, database_url
) -> None:
    from tests.conftest import REPO

    examples = REPO / "alertmanager-examples"
    sources = yaml.safe_load((examples / "generic-source.yml").read_text())["sources"]
    bridge = await bridge_factory(sources=sources)
    headers = {"content-type": "application/json"}
    for path, sample in (
        ("/webhook/grafana", "grafana-firing.json"),
        ("/webhook/uptime", "generic-uptime.json"),
    ):
        body = (examples / "payloads" / sample).read_bytes()
        answer = await bridge.post(path, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
    unknown = await bridge.post("/webhook/nagios", content=b"{}", headers=headers)
    assert unknown.status_code == 404 and "uptime" in unknown.json()["error"]

    assert await settled(database_url, 2) == {"delivered": 2}
    texts = [m.text for m in telegram.sent_messages()]
    assert any("High memory usage" in t and "<node-7>" in t for t in texts)
    assert any("CheckoutHomepage" in t and "<Service Unavailable>" in t for t in texts)


async def test_a_template_failing_at_run_time_falls_back_to_the_default(
    bridge_factory, telegram, database_url, tmp_path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    # Fine for most alerts (check-config passes), broken for one with label boom.
    (templates / "fragile.html.j2").write_text(
        '{% if common_labels.get("boom") %}{{ missing.value }}{% endif %}<b>{{ status }}</b>'
    )
    bridge = await bridge_factory(
        template_dirs=[str(templates)], route={"chats": [-1001], "template": "fragile"}
    )
    await bridge.post("/alertmanager", webhook(alert("Normal")))
    await bridge.post("/alertmanager", webhook(alert("Boom", labels={"boom": "yes"})))
    assert await settled(database_url, 2) == {"delivered": 2}
    normal, boom = telegram.sent_messages()
    assert normal.text == "firing"
    assert "Boom" in boom.text  # the default template, not lost
