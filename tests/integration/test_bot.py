"""People act where the alert is: /ack, /silence and the buttons, against the
real Alertmanager, with updates coming through the Telegram double.

Users: 1001 (@oncall) may do everything in chat -1001; 2002 (@visitor) is
outside every allow-list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import yaml

from bridge.sandbox.botapi import StoredMessage, TelegramDouble
from tests.alertmanager import Alertmanager, am_alert
from tests.conftest import (
    build_config,
    config_dict,
    refusing_port,
    start_bridge,
    states,
    wait_until,
)
from tests.payloads import alert, webhook

ONCALL, VISITOR = 1001, 2002
CHAT = -1001
SECRET = "s3cret-token"
GROUP = '{}:{alertname="Disk"}'
ENDED = "2026-11-20T11:00:00Z"


def bot_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "allow": {action: {"users": [ONCALL]} for action in ("read", "ack", "silence")},
        **overrides,
    }


def buttons(message: StoredMessage) -> list[str]:
    markup = message.reply_markup
    return [b["text"] for b in markup["inline_keyboard"][0]] if markup else []


async def edits_done(bridge: Any, count: int) -> None:
    """Wait for ``count`` edits of thread messages by the worker."""

    async def done() -> bool:
        return bridge.metrics.thread_edits.labels("ok")._value.get() == count

    await wait_until(done)


async def am_silences(alertmanager: Alertmanager) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=alertmanager.url) as client:
        answer = await client.get("/api/v2/silences")
        answer.raise_for_status()
        return [s for s in answer.json() if s["status"]["state"] == "active"]


def answers(telegram: TelegramDouble) -> list[str]:
    """What answerCallbackQuery told people, in order."""
    return [c.params.get("text", "") for c in telegram.calls if c.method == "answerCallbackQuery"]


@pytest.fixture
async def stack(bridge_factory, telegram: TelegramDouble, tmp_path):
    """Alertmanager → bridge (bot polling) → double, with the bot's Alertmanager API."""
    alertmanager = Alertmanager(tmp_path / "am")
    await alertmanager.start()
    bridge = await bridge_factory(bot=bot_settings(), alertmanager={"urls": [alertmanager.url]})
    await alertmanager.notify(f"http://{bridge.config.listen}/alertmanager")
    yield alertmanager, bridge
    await alertmanager.stop()


async def recorded(database_url: str, deliveries: int = 1) -> None:
    """Until the bridge has recorded ``deliveries`` messages as delivered. Telegram has
    a message a moment before the worker records it; a person answers it later than
    that, and so do these tests (an answer to a message not recorded yet is refused)."""

    async def done() -> bool:
        return (await states(database_url)).get("delivered", 0) >= deliveries

    await wait_until(done)


async def test_silence_button_creates_a_real_silence_and_undo_expires_it(
    stack, telegram: TelegramDouble, database_url: str
) -> None:
    alertmanager, _ = stack
    await alertmanager.fire(am_alert("DiskFull", severity="critical", instance="db-1"))
    [message] = await telegram.wait_for_messages(1, timeout=30)
    await recorded(database_url)
    assert [b["text"] for b in message.reply_markup["inline_keyboard"][0]] == [
        "✋ Ack",
        "🔕 Silence 1h",
        "🔕 Silence 1d",
    ]
    silence_data = message.reply_markup["inline_keyboard"][0][1]["callback_data"]

    telegram.press_button(CHAT, message.message_id, silence_data, user_id=ONCALL)
    await wait_until(lambda: len(telegram.sent_messages()) == 2)
    [silence] = await am_silences(alertmanager)
    assert {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]} == {
        ("alertname", "DiskFull", True, False),
        ("severity", "critical", True, False),
        ("instance", "db-1", True, False),
    }
    assert silence["createdBy"] == "@oncall"
    confirmation = telegram.sent_messages()[1]
    assert confirmation.reply_to == message.message_id and silence["id"] in confirmation.text
    assert answers(telegram) == ["Silenced for 1h"]

    undo_data = confirmation.reply_markup["inline_keyboard"][0][0]["callback_data"]
    telegram.press_button(CHAT, confirmation.message_id, undo_data, user_id=ONCALL)
    await wait_until(lambda: len(answers(telegram)) == 2)
    assert await am_silences(alertmanager) == []
    assert answers(telegram)[1] == "Silence expired"


async def test_alerts_lists_what_alertmanager_has_firing(stack, telegram) -> None:
    alertmanager, _ = stack
    await alertmanager.fire(
        am_alert("CpuHot", severity="warning", instance="web-1"),
        am_alert("QueueStuck", severity="critical", queue="<billing>"),
    )
    await telegram.wait_for_messages(2, timeout=30)
    telegram.user_message(CHAT, "/alerts", user_id=ONCALL)
    await wait_until(lambda: len(telegram.sent_messages()) == 3)
    listing = telegram.sent_messages()[2].text
    assert listing.startswith("2 firing")
    assert "CpuHot" in listing and "QueueStuck" in listing and "queue=<billing>" in listing


async def test_a_user_outside_the_allow_list_cannot_silence(
    stack, telegram, database_url: str
) -> None:
    alertmanager, bridge = stack
    await alertmanager.fire(am_alert("DiskFull", severity="critical"))
    [message] = await telegram.wait_for_messages(1, timeout=30)
    await recorded(database_url)
    data = message.reply_markup["inline_keyboard"][0][2]["callback_data"]
    telegram.press_button(CHAT, message.message_id, data, user_id=VISITOR, username="visitor")
    telegram.user_message(CHAT, "/silence 2h", user_id=VISITOR, reply_to=message.message_id)
    await wait_until(lambda: len(answers(telegram)) == 1 and len(telegram.sent_messages()) == 2)

    assert await am_silences(alertmanager) == []
    assert "not allowed" in answers(telegram)[0]
    assert "not allowed" in telegram.sent_messages()[1].text
    denied = bridge.metrics.bot_commands
    assert denied.labels("button_silence", "denied")._value.get() == 1
    assert denied.labels("silence", "denied")._value.get() == 1


async def test_silence_command_with_duration_and_comment(
    stack, telegram, database_url: str
) -> None:
    alertmanager, _ = stack
    await alertmanager.fire(am_alert("DiskFull", severity="critical"))
    [message] = await telegram.wait_for_messages(1, timeout=30)
    await recorded(database_url)
    telegram.user_message(
        CHAT, "/silence 90m disk swap ordered", user_id=ONCALL, reply_to=message.message_id
    )
    await wait_until(lambda: len(telegram.sent_messages()) == 2)
    [silence] = await am_silences(alertmanager)
    assert silence["comment"] == "disk swap ordered"

    telegram.user_message(CHAT, f"/unsilence {silence['id']}", user_id=ONCALL)
    await wait_until(lambda: len(telegram.sent_messages()) == 3)
    assert await am_silences(alertmanager) == []


async def test_a_repeated_webhook_update_creates_one_silence(
    bridge_factory, telegram: TelegramDouble, tmp_path, database_url: str
) -> None:
    alertmanager = Alertmanager(tmp_path / "am")
    await alertmanager.start()
    try:
        bridge = await bridge_factory(
            bot=bot_settings(updates="webhook", webhook_secret=SECRET),
            alertmanager={"urls": [alertmanager.url]},
        )
        await alertmanager.notify(f"http://{bridge.config.listen}/alertmanager")
        await alertmanager.fire(am_alert("DiskFull", severity="critical"))
        [message] = await telegram.wait_for_messages(1, timeout=30)
        await recorded(database_url)
        data = message.reply_markup["inline_keyboard"][0][1]["callback_data"]
        update = telegram.press_button(CHAT, message.message_id, data, user_id=ONCALL, push=False)
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        wrong = await bridge.post(
            "/telegram/webhook", update, headers={"X-Telegram-Bot-Api-Secret-Token": "no"}
        )
        assert wrong.status_code == 401
        for _ in range(3):  # Telegram retrying the same update
            assert (
                await bridge.post("/telegram/webhook", update, headers=headers)
            ).status_code == 200
        assert len(await am_silences(alertmanager)) == 1
        assert len(answers(telegram)) == 1
    finally:
        await alertmanager.stop()


async def test_ack_edits_the_message_and_suppresses_reminders(
    bridge_factory, telegram: TelegramDouble, database_url
) -> None:
    bridge = await bridge_factory(bot=bot_settings(), delivery={"dedup_window": "1s"})
    payload = webhook(alert("Disk"))
    await bridge.post("/alertmanager", payload)
    [message] = await telegram.wait_for_messages(1, timeout=30)
    await recorded(database_url)
    telegram.user_message(CHAT, "/ack", user_id=ONCALL, reply_to=message.message_id)
    await wait_until(lambda: len(telegram.sent_messages()) == 2)
    assert "Acked by @oncall" in message.text and message.edits == 1
    assert [b["text"] for b in message.reply_markup["inline_keyboard"][0]] == [
        "🔕 Silence 1h",
        "🔕 Silence 1d",
    ]

    # Alertmanager's repeat reminder, after the dedup window: suppressed.
    await asyncio.sleep(1.1)
    answer = await bridge.post("/alertmanager", payload)
    assert answer.json()["deliveries"] == []
    # Something new in the group is delivered.
    await bridge.post("/alertmanager", webhook(alert("Disk"), alert("Disk", labels={"host": "b"})))
    await telegram.wait_for_messages(3, timeout=30)
    assert await states(database_url) == {"delivered": 2, "suppressed": 1}
    assert bridge.metrics.bot_commands.labels("ack", "ok")._value.get() == 1


async def test_chatid_answers_anyone(bridge_factory, telegram: TelegramDouble) -> None:
    await bridge_factory(bot=bot_settings())
    telegram.user_message(-100777, "/chatid", user_id=VISITOR)
    [answer] = await telegram.wait_for_messages(1, timeout=30)
    assert answer.text == "Chat id: -100777"


async def test_a_reply_that_meets_flood_control_waits_and_arrives(
    bridge_factory, telegram: TelegramDouble
) -> None:
    await bridge_factory(bot=bot_settings())
    telegram.rate_limit_next(1, retry_after=1)
    telegram.user_message(-100777, "/chatid", user_id=VISITOR)
    [answer] = await telegram.wait_for_messages(1, timeout=30)
    assert answer.text == "Chat id: -100777"
    refused, sent = [c for c in telegram.calls if c.method == "sendMessage"]
    assert refused.response is not None and refused.response["error_code"] == 429
    assert sent.at - refused.at >= 1.0


async def test_silences_fail_over_to_the_next_alertmanager(
    bridge_factory, telegram: TelegramDouble, tmp_path, database_url: str
) -> None:
    alertmanager = Alertmanager(tmp_path / "am")
    await alertmanager.start()
    with refusing_port() as port:
        try:
            down = f"http://127.0.0.1:{port}"  # the first replica of the pair is down
            bridge = await bridge_factory(
                bot=bot_settings(), alertmanager={"urls": [down, alertmanager.url]}
            )
            await bridge.post("/alertmanager", webhook(alert("Disk")))
            [message] = await telegram.wait_for_messages(1, timeout=30)
            await recorded(database_url)
            data = message.reply_markup["inline_keyboard"][0][1]["callback_data"]
            telegram.press_button(CHAT, message.message_id, data, user_id=ONCALL)
            await wait_until(lambda: len(telegram.sent_messages()) == 2)
            [silence] = await am_silences(alertmanager)
            assert alertmanager.url in telegram.sent_messages()[1].raw_text
            assert {m["name"] for m in silence["matchers"]} == {"alertname", "severity"}
        finally:
            await alertmanager.stop()


async def test_ack_on_a_thread_s_first_message_shows_the_group_as_it_is_now(
    bridge_factory, telegram: TelegramDouble
) -> None:
    bridge = await bridge_factory(bot=bot_settings())
    a, b = (alert("Disk", labels={"host": host}) for host in "ab")
    await bridge.post("/alertmanager", webhook(a, group_key=GROUP))
    [first] = await telegram.wait_for_messages(1, timeout=30)
    await bridge.post("/alertmanager", webhook(a, b, group_key=GROUP))
    await telegram.wait_for_messages(2, timeout=30)
    await edits_done(bridge, 1)
    grown = first.raw_text  # the first message shows both alerts now

    telegram.user_message(CHAT, "/ack", user_id=ONCALL, reply_to=first.message_id)
    await wait_until(lambda: len(telegram.sent_messages()) == 3)
    assert first.raw_text.startswith(grown) and "Acked by @oncall" in first.text
    assert buttons(first) == ["🔕 Silence 1h", "🔕 Silence 1d"]

    gone = [alert("Disk", labels={"host": h}, status="resolved", ends_at=ENDED) for h in "ab"]
    await bridge.post("/alertmanager", webhook(*gone, group_key=GROUP))
    await telegram.wait_for_messages(4, timeout=30)
    await edits_done(bridge, 2)
    resolved = first.raw_text
    assert "RESOLVED" in resolved and buttons(first) == []

    telegram.user_message(CHAT, "/ack", user_id=ONCALL, reply_to=first.message_id)
    await wait_until(lambda: len(telegram.sent_messages()) == 5)
    assert first.raw_text.startswith(resolved) and "Acked by @oncall" in first.text
    assert buttons(first) == []  # resolved: no Silence buttons come back


async def test_the_first_message_s_ack_button_acts_on_the_first_message(
    bridge_factory, telegram: TelegramDouble
) -> None:
    bridge = await bridge_factory(bot=bot_settings())
    a, b = (alert("Disk", labels={"host": host}) for host in "ab")
    await bridge.post("/alertmanager", webhook(a, group_key=GROUP))
    [first] = await telegram.wait_for_messages(1, timeout=30)
    await bridge.post("/alertmanager", webhook(a, b, group_key=GROUP))
    _, reply = await telegram.wait_for_messages(2, timeout=30)
    await edits_done(bridge, 1)
    grown = first.raw_text

    ack = first.reply_markup["inline_keyboard"][0][0]
    assert ack["text"] == "✋ Ack"
    telegram.press_button(CHAT, first.message_id, ack["callback_data"], user_id=ONCALL)
    await wait_until(lambda: len(answers(telegram)) == 1)
    assert answers(telegram)[0].startswith("Acked by @oncall")
    assert first.raw_text.startswith(grown) and "Acked by @oncall" in first.text
    assert buttons(first) == ["🔕 Silence 1h", "🔕 Silence 1d"]
    assert reply.edits == 0


async def test_silences_and_times_read_as_alertmanager_and_the_configured_zone(
    bridge_factory, telegram: TelegramDouble, tmp_path, database_url: str
) -> None:
    alertmanager = Alertmanager(tmp_path / "am", "http://127.0.0.1:9/unused")
    await alertmanager.start()
    try:
        bridge = await bridge_factory(
            bot=bot_settings(),
            alertmanager={"urls": [alertmanager.url]},
            timezone="Asia/Kolkata",  # +05:30 all year
        )
        matchers = [
            {"name": "alertname", "value": "Disk", "isRegex": False, "isEqual": True},
            {"name": "severity", "value": "info", "isRegex": False, "isEqual": False},
            {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": False},
        ]
        async with httpx.AsyncClient(base_url=alertmanager.url) as client:
            created = await client.post(
                "/api/v2/silences",
                json={
                    "matchers": matchers,
                    "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "2030-01-01T12:00:00Z",
                    "createdBy": "ops",
                    "comment": "maintenance",
                },
            )
            created.raise_for_status()
        telegram.user_message(CHAT, "/silences", user_id=ONCALL)
        [listing] = await telegram.wait_for_messages(1, timeout=30)
        assert 'severity!="info"' in listing.text and 'instance!~"db-.*"' in listing.text
        assert "until 2030-01-01 17:30 IST" in listing.text

        await bridge.post("/alertmanager", webhook(alert("Disk")))
        _, message = await telegram.wait_for_messages(2, timeout=30)
        await recorded(database_url)
        silence_1h = message.reply_markup["inline_keyboard"][0][1]["callback_data"]
        telegram.press_button(CHAT, message.message_id, silence_1h, user_id=ONCALL)
        telegram.user_message(CHAT, "/ack", user_id=ONCALL, reply_to=message.message_id)
        await wait_until(lambda: len(telegram.sent_messages()) == 4)
        confirmation = next(m for m in telegram.sent_messages() if "Silenced by" in m.text)
        assert " IST\n" in confirmation.text and "UTC" not in confirmation.text
        assert "IST</i>" in message.raw_text and "UTC" not in message.raw_text
    finally:
        await alertmanager.stop()


async def test_a_reload_applies_permissions_and_alertmanager_urls_at_once(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    alertmanager = Alertmanager(tmp_path / "am", "http://127.0.0.1:9/unused")
    await alertmanager.start()
    with refusing_port() as port:
        await reload_applies_permissions_and_urls(
            database_url, amqp_names, telegram, tmp_path, alertmanager, port
        )


async def reload_applies_permissions_and_urls(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path, alertmanager, port: int
) -> None:
    down = f"http://127.0.0.1:{port}"  # nothing listens there
    data = config_dict(
        database_url,
        amqp_names,
        telegram.url,
        bot=bot_settings(),
        alertmanager={"urls": [down]},
    )
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(data))
    bridge = await start_bridge(build_config(data), config_path=path)
    try:
        await bridge.post("/alertmanager", webhook(alert("Disk")))
        [message] = await telegram.wait_for_messages(1, timeout=30)
        await recorded(database_url)
        _, silence_1h, silence_1d = (
            b["callback_data"] for b in message.reply_markup["inline_keyboard"][0]
        )
        telegram.press_button(CHAT, message.message_id, silence_1h, user_id=ONCALL)
        await wait_until(lambda: len(answers(telegram)) == 1)
        assert "no Alertmanager answered" in answers(telegram)[0]

        data["alertmanager"] = {"urls": [alertmanager.url]}
        path.write_text(yaml.safe_dump(data))
        reloaded = await bridge.post("/-/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["applied"] == ["alertmanager.urls"]
        telegram.press_button(CHAT, message.message_id, silence_1h, user_id=ONCALL)
        await wait_until(lambda: len(answers(telegram)) == 2)
        assert answers(telegram)[1] == "Silenced for 1h"
        assert len(await am_silences(alertmanager)) == 1

        data["bot"]["allow"]["silence"] = {"users": []}  # on-call loses the right to silence
        path.write_text(yaml.safe_dump(data))
        reloaded = await bridge.post("/-/reload")
        assert reloaded.json()["applied"] == ["bot.allow.silence.users"]
        assert reloaded.json()["needs_restart"] == []
        telegram.press_button(CHAT, message.message_id, silence_1d, user_id=ONCALL)
        telegram.user_message(CHAT, "/silence 2h", user_id=ONCALL, reply_to=message.message_id)
        await wait_until(lambda: len(answers(telegram)) == 3 and len(telegram.sent_messages()) == 3)
        assert "not allowed" in answers(telegram)[2]
        assert "not allowed" in telegram.sent_messages()[2].text
        assert len(await am_silences(alertmanager)) == 1
    finally:
        await bridge.shutdown()
        await alertmanager.stop()


async def test_a_reloaded_webhook_secret_is_given_to_telegram_and_enforced_at_once(
    database_url, amqp_names, telegram: TelegramDouble, tmp_path
) -> None:
    webhook_url = "https://alertbridge.example/telegram/webhook"
    data = config_dict(
        database_url,
        amqp_names,
        telegram.url,
        bot=bot_settings(updates="webhook", webhook_url=webhook_url, webhook_secret=SECRET),
    )
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(data))
    bridge = await start_bridge(build_config(data), config_path=path)
    try:
        data["bot"]["webhook_secret"] = "rotated-secret"
        path.write_text(yaml.safe_dump(data))
        reloaded = await bridge.post("/-/reload")
        assert reloaded.json()["applied"] == ["bot.webhook_secret"]
        registered = [c.params for c in telegram.calls if c.method == "setWebhook"]
        assert [p["secret_token"] for p in registered] == [SECRET, "rotated-secret"]

        update = telegram.user_message(-100777, "/chatid", user_id=VISITOR, push=False)
        old = await bridge.post(
            "/telegram/webhook", update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert old.status_code == 401
        new = await bridge.post(
            "/telegram/webhook",
            update,
            headers={"X-Telegram-Bot-Api-Secret-Token": "rotated-secret"},
        )
        assert new.status_code == 200
        [answer] = await telegram.wait_for_messages(1, timeout=30)
        assert answer.text == "Chat id: -100777"
    finally:
        await bridge.shutdown()
