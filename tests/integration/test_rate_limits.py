"""A storm against a double that enforces Telegram's limits the way Telegram does."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.conftest import states, wait_until
from tests.payloads import alert, webhook
from tests.telegram_double import TelegramDouble

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
