"""End to end with the real Alertmanager: its webhooks, its retries, its HA copies."""

from __future__ import annotations

import asyncio

from bridge.sandbox.botapi import TelegramDouble
from tests.alertmanager import Alertmanager, am_alert
from tests.conftest import TOKEN, states, wait_until


async def test_firing_then_resolved_is_one_message_and_one_reply_the_first_edited(
    bridge, telegram: TelegramDouble, database_url, tmp_path
) -> None:
    alertmanager = Alertmanager(tmp_path / "am", f"http://{bridge.config.listen}/alertmanager")
    await alertmanager.start()
    try:
        await alertmanager.fire(am_alert("PaymentsDown", severity="critical"))
        await telegram.wait_for_messages(1, timeout=30)
        first_text = telegram.sent_messages()[0].text
        await alertmanager.fire(am_alert("PaymentsDown", severity="critical", resolved=True))
        await telegram.wait_for_messages(2, timeout=30)

        # The first message is edited once the reply is sent and recorded.
        async def first_edited() -> bool:
            return telegram.sent_messages()[0].edits >= 1

        await wait_until(first_edited, timeout=30)
    finally:
        await alertmanager.stop()

    first, reply = telegram.sent_messages()
    assert "PaymentsDown" in first_text and "<is> & firing" in first_text
    assert "FIRING" in first_text
    # The resolution is a reply in the group's thread ...
    assert reply.reply_to == first.message_id and "RESOLVED" in reply.text
    # ... and the first message now shows the group's current state.
    assert first.edits == 1 and first.text == reply.text
    assert await states(database_url) == {"delivered": 2}


async def test_two_alertmanagers_without_gossip_yield_one_message(
    bridge, telegram: TelegramDouble, database_url, tmp_path
) -> None:
    url = f"http://{bridge.config.listen}/alertmanager"
    replicas = [Alertmanager(tmp_path / f"am{i}", url) for i in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        alert = am_alert("DiskFull", severity="warning", instance="db-1")
        await asyncio.gather(*(replica.fire(alert) for replica in replicas))

        async def both_replicas_posted() -> bool:
            received = bridge.metrics.webhooks
            accepted = received.labels("alertmanager", "accepted")._value.get()
            duplicate = received.labels("alertmanager", "duplicate")._value.get()
            return accepted + duplicate >= 2

        await wait_until(both_replicas_posted, timeout=30)
        await telegram.wait_for_messages(1, timeout=30)
        await asyncio.sleep(1.0)  # room for a wrong second message
    finally:
        for replica in replicas:
            await replica.stop()

    assert len(telegram.sent_messages()) == 1
    assert bridge.metrics.webhooks.labels("alertmanager", "duplicate")._value.get() >= 1
    assert await states(database_url) == {"delivered": 1}


async def test_alertmanagers_own_telegram_configs_duplicate_without_gossip(
    telegram: TelegramDouble, tmp_path
) -> None:
    """The problem the bridge solves, measured: the same broken HA pair using
    Alertmanager's own telegram_configs sends every notification twice."""
    replicas = [Alertmanager(tmp_path / f"am{i}", "http://127.0.0.1:9/unused") for i in range(2)]
    for replica in replicas:
        replica.use_receiver(
            {
                "telegram_configs": [
                    {
                        "api_url": telegram.url,
                        "bot_token": TOKEN,
                        "chat_id": -1001,
                        "send_resolved": True,
                    }
                ]
            }
        )
        await replica.start()
    try:
        alert = am_alert("DiskFull", severity="warning", instance="db-1")
        await asyncio.gather(*(replica.fire(alert) for replica in replicas))
        await telegram.wait_for_messages(2, timeout=30)
        await asyncio.sleep(1.0)
    finally:
        for replica in replicas:
            await replica.stop()
    assert len(telegram.sent_messages()) == 2  # one notification, two messages
