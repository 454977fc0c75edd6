"""The bot's pure parts: button data within Telegram's 64 bytes, pages within 4096,
what an alert message shows, and matchers printed as Alertmanager prints them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.alertmanager_api import matcher_string, matchers_string
from bridge.bot.formatting import alert_line, paginate
from bridge.bot.keyboards import (
    Acked,
    Callback,
    alert_keyboard,
    alert_view,
    decode,
    encode,
    page_keyboard,
)
from bridge.sandbox.botapi import parse_telegram_html
from bridge.telegram_text import TELEGRAM_LIMIT, utf16_len, visible_text


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


# Alertmanager's own table (pkg/labels/matcher_test.go, TestMatcherString),
# as the API v2 JSON the bot reads from GET /silences.
@pytest.mark.parametrize(
    ("name", "is_equal", "is_regex", "value", "printed"),
    [
        ("foo", True, False, "bar", 'foo="bar"'),
        ("foo", False, False, "bar", 'foo!="bar"'),
        ("foo", True, True, "bar", 'foo=~"bar"'),
        ("foo", False, True, "bar", 'foo!~"bar"'),
        ("foo", True, False, "back\\slash", 'foo="back\\\\slash"'),
        ("foo", True, False, 'double"quote', 'foo="double\\"quote"'),
        ("foo", True, False, "new\nline", 'foo="new\\nline"'),
        ("foo", True, False, "tab\tstop", 'foo="tab\tstop"'),
        ("foo", True, False, "🙂", 'foo="🙂"'),
        ("foo!", False, False, "bar", '"foo!"!="bar"'),
        ("foo🙂", True, False, "bar", 'foo🙂="bar"'),
        ("foo bar", True, False, "baz", '"foo bar"="baz"'),
        # A quoted name quotes its value the Go way too (strconv.Quote).
        ("foo bar", True, False, "tab\tstop\x01", '"foo bar"="tab\\tstop\\x01"'),
    ],
)
def test_a_matcher_prints_as_alertmanager_prints_it(
    name: str, is_equal: bool, is_regex: bool, value: str, printed: str
) -> None:
    matcher = {"name": name, "value": value, "isEqual": is_equal, "isRegex": is_regex}
    assert matcher_string(matcher) == printed


def test_a_matcher_without_is_equal_is_an_equality_and_a_list_is_braced() -> None:
    matchers = [
        {"name": "alertname", "value": "Disk", "isRegex": False},
        {"name": "severity", "value": "info|debug", "isRegex": True, "isEqual": False},
    ]
    assert matchers_string(matchers) == '{alertname="Disk",severity!~"info|debug"}'


ACKED = Acked("@oncall", datetime(2026, 1, 15, 9, 30, tzinfo=UTC))


def test_an_acked_alert_says_who_and_when_in_the_configured_zone() -> None:
    text, markup = alert_view(
        "<b>Disk</b>", 7, resolved=False, acked=ACKED, buttons=True, timezone="Europe/Berlin"
    )
    assert text == "<b>Disk</b>\n\n✋ <i>Acked by @oncall at 10:30 CET</i>"
    assert markup is not None
    assert [b.callback_data for b in markup.inline_keyboard[0]] == [
        "silence:7:1h",
        "silence:7:1d",
    ]


def test_a_resolved_alert_has_no_buttons_even_when_acked() -> None:
    for acked in (None, ACKED):
        _, markup = alert_view("x", 7, resolved=True, acked=acked, buttons=True, timezone="UTC")
        assert markup is None


def test_buttons_switched_off_stay_off_after_an_ack() -> None:
    _, markup = alert_view("x", 7, resolved=False, acked=ACKED, buttons=False, timezone="UTC")
    assert markup is None


def test_the_ack_line_is_left_out_when_the_text_is_full() -> None:
    full = "x" * TELEGRAM_LIMIT
    text, markup = alert_view(full, 7, resolved=False, acked=ACKED, buttons=True, timezone="UTC")
    assert text == full and markup is not None and len(markup.inline_keyboard[0]) == 2
