"""A storm against a double that enforces Telegram's limits the way Telegram does."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import states, wait_until
from tests.payloads import alert, webhook

CHATS = {"a": -1001, "b": -1002, "c": 3003}  # two groups and a private chat
ROUTE = {
    "chats": [-1009],
    "routes": [{"matchers": [f'chat="{name}"'], "chats": [chat]} for name, chat in CHATS.items()],
}


@pytest.fixture
def strict_telegram(telegram: TelegramDouble) -> TelegramDouble:
    telegram.enforce_rate_limits = True
    return telegram


@pytest.mark.slow
async def test_a_storm_gets_no_429s_and_a_busy_chat_stalls_no_other(
    bridge_factory, strict_telegram: TelegramDouble, database_url
) -> None:
    bridge = await bridge_factory(
        route=ROUTE, rate_limits={"enabled": True, "max_inline_wait": "500ms"}
    )
    # Eight alerts for chat a and six for b at once, then one for c.
    payloads = [webhook(alert(f"A{i}", labels={"chat": "a"})) for i in range(8)]
    payloads += [webhook(alert(f"B{i}", labels={"chat": "b"})) for i in range(6)]
    answers = await asyncio.gather(*(bridge.post("/alertmanager", p) for p in payloads))
    assert {a.status_code for a in answers} == {200}
    await bridge.post("/alertmanager", webhook(alert("C0", labels={"chat": "c"})))

    await wait_until(lambda: len(strict_telegram.sent_messages()) == 15, timeout=40)
    assert strict_telegram.rate_limited == 0  # Telegram never had to say 429

    def sends(chat: int) -> list[float]:
        return [
            c.at
            for c in strict_telegram.calls
            if c.method == "sendMessage" and int(c.params["chat_id"]) == chat
        ]

    # Chat c is not behind a's and b's backlog (8 and 6 seconds of it).
    first = min(itertools.chain.from_iterable(sends(chat) for chat in CHATS.values()))
    assert sends(3003)[0] - first < 2.0
    # Each chat got at most one message a second.
    for chat in CHATS.values():
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(sends(chat))), chat
    assert await states(database_url) == {"delivered": 15}
    assert bridge.metrics.rate_limit_parked._value.get() > 0  # waited in the store, not a slot


@pytest.mark.slow
async def test_a_storm_becomes_a_digest_within_seconds_and_loses_nothing(
    bridge_factory, strict_telegram: TelegramDouble, database_url
) -> None:
    bridge = await bridge_factory(route=ROUTE, rate_limits={"enabled": True, "digest_after": 5})
    payloads = [
        webhook(alert(f"Node{i % 3}", labels={"chat": chat, "dc": "dc1", "n": str(i)}))
        for chat in ("a", "b")
        for i in range(30)
    ]
    answers = await asyncio.gather(*(bridge.post("/alertmanager", p) for p in payloads))
    assert {a.status_code for a in answers} == {200}

    async def all_accounted() -> bool:
        counts = await states(database_url)
        return counts.get("delivered", 0) + counts.get("suppressed", 0) == 60

    await wait_until(all_accounted, timeout=30)
    assert strict_telegram.rate_limited == 0
    for chat in (-1001, -1002):
        sends = [
            c
            for c in strict_telegram.calls
            if c.method == "sendMessage" and int(c.params["chat_id"]) == chat
        ]
        # The picture within seconds, in a few messages, not a 30-message drip. (Webhooks
        # still being accepted while the digest goes out can make a second one.)
        assert len(sends) <= 8, [c.params["text"][:40] for c in sends]
        digests = [c for c in sends if c.params["text"].startswith("🌪")]
        assert digests and digests[0].at - sends[0].at < 5.0
        text = strict_telegram.sent_messages(chat)[sends.index(digests[0])].text
        assert "dc=dc1" in text and "Node0: " in text
    counts = await states(database_url)
    suppressed = bridge.metrics.deliveries_finished.labels("suppressed", "digest")._value.get()
    assert counts["suppressed"] == suppressed  # every folded row is counted ...
    connection = await asyncpg.connect(database_url)
    try:  # ... and points at the digest that carried it
        orphans = await connection.fetchval(
            "SELECT count(*) FROM deliveries WHERE state = 'suppressed' AND digest_id IS NULL"
        )
    finally:
        await connection.close()
    assert orphans == 0
