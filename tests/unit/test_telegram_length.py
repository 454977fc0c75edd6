"""How long Telegram lets a message be, and that the double and the renderer agree.

TDLib (td/telegram/MessageContent.cpp) refuses a bot's text when
``utf8_length(text) > message_text_length_max`` (4096): Unicode code points, not
UTF-16 code units, of the text ``fix_formatted_text`` keeps, which has dropped
``\\r``, U+2028..U+202E and three combining marks (``clean_input_string``) and
trimmed spaces and newlines (from the start only up to the first entity).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.models import Alert, Destination, Notification, Status
from bridge.render import build_environment, render
from bridge.sandbox.formatting import MESSAGE_LIMIT, TextRefused, kept_text, parse_html
from bridge.telegram_text import (
    TELEGRAM_LIMIT,
    TELEGRAM_SOURCE_LIMIT,
    telegram_length,
    visible_text,
)


@pytest.mark.parametrize(
    ("text", "kept", "length"),
    [
        ("x" * 4096, "x" * 4096, 4096),
        ("😀" * 4096, "😀" * 4096, 4096),  # 8192 UTF-16 code units, 4096 code points
        ("é", "é", 1),
        ("e\u0301", "e\u0301", 2),  # a combining accent is a code point of its own
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧", 5),
        ("a\r\nb", "a\nb", 3),  # '\r' is dropped
        ("a\u2028b\u202ec", "abc", 3),  # U+2028..U+202E are dropped
        ("a\u0333\u033f\u030ab", "ab", 2),  # and so are these three combining marks
        ("a\tb\x01c", "a b c", 5),  # control characters become spaces
        ("ab \n \n", "ab", 2),  # trailing spaces and newlines go
        (" \n ab", "ab", 2),  # so do leading ones (no entity here)
        ("ab\t", "ab", 2),  # a tab is a space by then
        ("ab\u00a0", "ab\u00a0", 3),  # a no-break space is kept
        (
            "\u200e\u200e\u200fx",
            "\u200c\u200c\u200fx",
            4,
        ),  # runs of marks: all but the last become ZWNJ
    ],
)
def test_what_telegram_keeps_and_counts(text: str, kept: str, length: int) -> None:
    shown, _ = kept_text(text)
    assert (shown, len(shown)) == (kept, length)
    # The renderer counts the same, from the visible text alone (no leading blanks here).
    if not text.startswith((" ", "\n")):
        assert telegram_length(text) == length


def test_leading_blanks_inside_an_entity_are_kept() -> None:
    text, entities = kept_text(*parse_html("  <b> x</b>"))
    assert text == " x"
    assert [(e.kind, e.offset, e.length) for e in entities] == [("Bold", 0, 2)]
    # The renderer counts every leading blank: never less than Telegram.
    assert telegram_length(visible_text("  <b> x</b>")) == 4


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("x" * 4097, "Message is too long"),
        ("😀" * 4097, "Message is too long"),
        ("", "Text must be non-empty"),
        (" \n\r\n ", "Text must be non-empty"),
        ("\u200b\u200d\ufeff\u00a0\u3000", "Text must be non-empty"),  # nothing visible
    ],
)
def test_what_telegram_refuses(text: str, refusal: str) -> None:
    with pytest.raises(TextRefused, match=refusal):
        kept_text(text)


def test_one_limit() -> None:
    assert TELEGRAM_LIMIT == MESSAGE_LIMIT == 4096


def _notification(*labels: dict[str, str]) -> Notification:
    alerts = tuple(
        Alert(
            status=Status.FIRING,
            labels={"alertname": "Emoji", **extra},
            annotations={},
            starts_at=None,
            ends_at=None,
            generator_url="",
            fingerprint=f"{i:016x}",
        )
        for i, extra in enumerate(labels)
    )
    return Notification(
        source="alertmanager",
        receiver="r",
        group_key="g",
        status=Status.FIRING,
        alerts=alerts,
        group_labels={},
        common_labels={"alertname": "Emoji"},
        common_annotations={},
        external_url="",
        truncated_alerts=0,
    )


def test_a_text_of_astral_characters_is_sent_whole_up_to_4096_of_them(tmp_path: Path) -> None:
    # 4000 emoji are 8000 UTF-16 code units: Telegram takes them all.
    (tmp_path / "plain.html.j2").write_text(
        "{% for a in alerts %}{{ a.labels.e }}{% endfor %}", encoding="utf-8"
    )
    env = build_environment([tmp_path])
    notification = _notification({"e": "😀" * 2000}, {"e": "🔥" * 2000})
    html = render(env, "plain", notification, Destination(chat_id=1))
    assert html == "😀" * 2000 + "🔥" * 2000
    assert kept_text(*parse_html(html))[0] == html  # and the double accepts it


def test_html_over_32_kib_is_cut_though_its_text_is_short(tmp_path: Path) -> None:
    # The Bot API refuses a text parameter over 32 KiB before parsing it.
    (tmp_path / "links.html.j2").write_text(
        '{% for a in alerts %}<a href="https://example.org/{{ a.labels.path }}">x</a>{% endfor %}'
        "+{{ omitted }}",
        encoding="utf-8",
    )
    env = build_environment([tmp_path])
    notification = _notification(*({"path": "p" * 1000} for _ in range(40)))
    html = render(env, "links", notification, Destination(chat_id=1))
    assert len(html.encode()) <= TELEGRAM_SOURCE_LIMIT
    assert html.count("<a ") < 40 and not html.endswith("+0")
    assert kept_text(*parse_html(html))  # the double accepts it
