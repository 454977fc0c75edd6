"""The bot's pure parts: button data within Telegram's 64 bytes, pages within 4096."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.bot.commands import alert_line, paginate
from bridge.bot.keyboards import Callback, alert_keyboard, decode, encode, page_keyboard
from bridge.render import TELEGRAM_LIMIT, utf16_len, visible_text
from bridge.sandbox.botapi import parse_telegram_html


@given(st.sampled_from(["ack", "silence", "undo", "alerts"]), st.integers(0, 2**63 - 1))
def test_callback_data_round_trips_within_64_bytes(verb: str, row_id: int) -> None:
    callback = Callback(verb, row_id, "1d" if verb == "silence" else "")
    data = encode(callback)
    assert len(data.encode()) <= 64
    assert decode(data) == callback


@pytest.mark.parametrize(
    "data", ["", "ack", "ack:x", "silence:5", "silence:5:2y", "ack:5:1h", "rm:5", "undo:-1"]
)
def test_data_the_bridge_did_not_write_is_refused(data: str) -> None:
    assert decode(data) is None


def test_an_acked_message_keeps_only_the_silence_buttons() -> None:
    texts = [b.text for b in alert_keyboard(7, acked=True).inline_keyboard[0]]
    assert texts == ["🔕 Silence 1h", "🔕 Silence 1d"]


def test_page_buttons() -> None:
    assert page_keyboard(0, 1) is None
    first = page_keyboard(0, 3)
    assert first is not None and [b.callback_data for b in first.inline_keyboard[0]] == ["alerts:1"]
    middle = page_keyboard(1, 3)
    assert middle is not None and len(middle.inline_keyboard[0]) == 2


def test_a_thousand_firing_alerts_paginate_within_the_limit() -> None:
    alerts = [
        {
            "labels": {"alertname": f"A{i}<&>", "severity": "critical", "pod": "😀" * 30},
            "annotations": {"summary": "x" * 400},
        }
        for i in range(1000)
    ]
    pages = paginate([alert_line(a) for a in alerts])
    assert len(pages) > 1
    shown = 0
    for page in pages:
        visible, _ = parse_telegram_html(page)  # Telegram accepts it
        assert utf16_len(visible) <= TELEGRAM_LIMIT
        assert visible == visible_text(page)
        shown += visible.count("🔥")
    assert shown == 1000  # every alert is on exactly one page
