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

from bridge.sandbox.botapi import TelegramDouble
from tests.alertmanager import Alertmanager, am_alert
from tests.conftest import refusing_port, states, wait_until
from tests.payloads import alert, webhook

ONCALL, VISITOR = 1001, 2002
CHAT = -1001
SECRET = "s3cret-token"
ALLOWED = {"users": [ONCALL]}


def bot_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "allow": {"read": ALLOWED, "ack": ALLOWED, "silence": ALLOWED},
        **overrides,
    }


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


async def test_silence_button_creates_a_real_silence_and_undo_expires_it(
    stack, telegram: TelegramDouble
) -> None:
    alertmanager, _ = stack
    await alertmanager.fire(am_alert("DiskFull", severity="critical", instance="db-1"))
    [message] = await telegram.wait_for_messages(1, timeout=30)
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


async def test_a_user_outside_the_allow_list_cannot_silence(stack, telegram) -> None:
    alertmanager, bridge = stack
    await alertmanager.fire(am_alert("DiskFull", severity="critical"))
    [message] = await telegram.wait_for_messages(1, timeout=30)
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


async def test_silence_command_with_duration_and_comment(stack, telegram) -> None:
    alertmanager, _ = stack
    await alertmanager.fire(am_alert("DiskFull", severity="critical"))
    [message] = await telegram.wait_for_messages(1, timeout=30)
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
    bridge_factory, telegram: TelegramDouble, tmp_path
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
    bridge_factory, telegram: TelegramDouble, tmp_path
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
            data = message.reply_markup["inline_keyboard"][0][1]["callback_data"]
            telegram.press_button(CHAT, message.message_id, data, user_id=ONCALL)
            await wait_until(lambda: len(telegram.sent_messages()) == 2)
            [silence] = await am_silences(alertmanager)
            assert alertmanager.url in telegram.sent_messages()[1].raw_text
            assert {m["name"] for m in silence["matchers"]} == {"alertname", "severity"}
        finally:
            await alertmanager.stop()
