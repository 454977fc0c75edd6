"""One thread per alert group and chat: the first firing message, replies
after it, and the first message kept showing the group's current state."""

from __future__ import annotations

import asyncio

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import settled, wait_until
from tests.payloads import alert, webhook

ENDED = "2026-11-20T11:00:00Z"


def group(*alerts, **kwargs):
    return webhook(*alerts, group_key='{}:{alertname="Disk"}', **kwargs)


async def edits_done(bridge, count: int) -> None:
    """Wait for ``count`` successful edits: a reply's edit follows its recording."""

    async def done() -> bool:
        return bridge.metrics.thread_edits.labels("ok")._value.get() == count

    await wait_until(done)


async def test_a_group_growing_and_resolving_is_one_thread(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    a = alert("Disk", labels={"host": "a"})
    b = alert("Disk", labels={"host": "b"})
    for payload in (
        group(a),
        group(a, b),
        group(alert("Disk", labels={"host": "a"}, status="resolved", ends_at=ENDED), b),
        group(
            alert("Disk", labels={"host": "a"}, status="resolved", ends_at=ENDED),
            alert("Disk", labels={"host": "b"}, status="resolved", ends_at=ENDED),
        ),
    ):
        assert (await bridge.post("/alertmanager", payload)).status_code == 200
        await asyncio.sleep(0.05)
    assert await settled(database_url, 4) == {"delivered": 4}

    await edits_done(bridge, 3)
    first, *replies = telegram.sent_messages()
    assert first.reply_to is None
    assert [r.reply_to for r in replies] == [first.message_id] * 3
    assert first.edits == 3 and "RESOLVED" in first.text


async def test_a_new_firing_after_resolution_starts_a_new_thread(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    await bridge.post("/alertmanager", group(alert("Disk")))
    await bridge.post("/alertmanager", group(alert("Disk", status="resolved", ends_at=ENDED)))
    assert await settled(database_url, 2) == {"delivered": 2}
    await bridge.post("/alertmanager", group(alert("Disk", starts_at="2026-11-21T09:00:00Z")))
    assert await settled(database_url, 3) == {"delivered": 3}

    first, resolved, again = telegram.sent_messages()
    assert resolved.reply_to == first.message_id
    assert again.reply_to is None


async def test_a_repeat_reminder_is_a_reply(bridge_factory, telegram, database_url) -> None:
    bridge = await bridge_factory(delivery={"dedup_window": "1s"})
    await bridge.post("/alertmanager", group(alert("Disk")))
    assert await settled(database_url, 1) == {"delivered": 1}
    await asyncio.sleep(1.1)
    await bridge.post("/alertmanager", group(alert("Disk")))
    assert await settled(database_url, 2) == {"delivered": 2}

    first, reminder = telegram.sent_messages()
    assert reminder.reply_to == first.message_id
    # Same content: the edit of the first message is "not modified", which is fine.
    await edits_done(bridge, 1)


async def test_a_deleted_first_message_is_replaced_and_remapped(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    a, b, c = (alert("Disk", labels={"host": h}) for h in "abc")
    await bridge.post("/alertmanager", group(a))
    assert await settled(database_url, 1) == {"delivered": 1}
    del telegram.messages[(-1001, telegram.sent_messages()[0].message_id)]  # a person deleted it

    await bridge.post("/alertmanager", group(a, b))
    assert await settled(database_url, 2) == {"delivered": 2}
    await bridge.post("/alertmanager", group(a, b, c))
    assert await settled(database_url, 3) == {"delivered": 3}

    _, replacement, reply = telegram.sent_messages()
    assert replacement.reply_to is None
    assert reply.reply_to == replacement.message_id


async def test_resolved_never_overtakes_its_firing(
    bridge, telegram: TelegramDouble, database_url
) -> None:
    telegram.rate_limit_next(1, retry_after=2)  # the firing one has to wait
    await bridge.post("/alertmanager", group(alert("Disk")))
    await bridge.post("/alertmanager", group(alert("Disk", status="resolved", ends_at=ENDED)))
    assert await settled(database_url, 2) == {"delivered": 2}

    accepted = [
        c.params["text"]
        for c in telegram.calls
        if c.method == "sendMessage" and c.response and c.response["ok"]
    ]
    assert "FIRING" in accepted[0] and "RESOLVED" in accepted[1]
    firing, resolved = telegram.sent_messages()
    assert resolved.reply_to == firing.message_id
    assert bridge.metrics.claims_deferred._value.get() >= 1


async def test_each_forum_topic_has_its_own_thread(bridge_factory, telegram, database_url):
    bridge = await bridge_factory(
        route={
            "chats": [-1001],
            "thread_id": 5,
            "routes": [
                {"matchers": ['severity="critical"'], "thread_id": 9, "continue": True},
                {"matchers": ['severity="critical"']},
            ],
        }
    )
    await bridge.post("/alertmanager", group(alert("Disk", severity="critical")))
    assert await settled(database_url, 2) == {"delivered": 2}
    await bridge.post(
        "/alertmanager", group(alert("Disk", severity="critical", status="resolved", ends_at=ENDED))
    )
    assert await settled(database_url, 4) == {"delivered": 4}

    by_topic = {}
    for message in telegram.sent_messages():
        by_topic.setdefault(message.thread_id, []).append(message)
    assert set(by_topic) == {5, 9}
    for first, reply in by_topic.values():
        assert reply.reply_to == first.message_id
