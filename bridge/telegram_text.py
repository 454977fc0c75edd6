"""Telegram's text arithmetic: escaping for its HTML parse mode, what it shows of
an HTML text, and how it counts a message against its limits. Pure, and free of
Jinja: the renderer, the bot, storm digests and the CLI all measure with it.

The rules follow TDLib (``td/telegram/MessageEntity.cpp``, ``MessageContent.cpp``)
and are held to its own tables in ``tests/unit/test_telegram_length.py``.
"""

from __future__ import annotations

import re

#: Telegram's limit on a message's text after entity parsing: Unicode code
#: points (not UTF-16 units) of the text it keeps; see :func:`telegram_length`.
TELEGRAM_LIMIT = 4096
#: The Bot API refuses a ``text`` over 32 KiB of UTF-8, markup included.
TELEGRAM_SOURCE_LIMIT = 1 << 15

ELLIPSIS = "…"


def utf16_len(text: str) -> int:
    """UTF-16 code units, the unit of entity offsets (an emoji is usually 2).

    Not the unit of the length limit: that is :func:`telegram_length`."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


# What Telegram makes of a text before counting it (TDLib's clean_input_string):
# control characters become spaces; '\r', U+2028..U+202E and the combining
# marks U+030A, U+0333, U+033F are dropped.
_CLEANED = str.maketrans(
    {
        **{chr(c): " " for c in range(0x20) if c not in (0x0A, 0x0D)},
        **dict.fromkeys("\r\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u030a\u0333\u033f"),
    }
)


def telegram_length(text: str) -> int:
    """The length Telegram limits to :data:`TELEGRAM_LIMIT`, of a visible ``text``.

    TDLib checks ``utf8_length`` (Unicode code points) of the text it keeps:
    cleaned (:data:`_CLEANED`) and without trailing spaces and newlines.
    Leading ones count here: Telegram drops them only up to the first entity,
    so counting them never says a text fits when it does not.
    """
    return len(text.translate(_CLEANED).rstrip(" \n"))


# A NUL cannot be escaped: TDLib's parse_html refuses any ("Text must not
# contain null bytes"). It becomes the space Telegram shows for it in plain text.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\0": " "})


def telegram_escape(text: str) -> str:
    """Escape exactly what Telegram's HTML parse mode needs escaped (a NUL, which
    no HTML can carry, becomes a space)."""
    return text.translate(_ESCAPES)


_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,8}));")


def _decode_entity(match: re.Match[str]) -> str:
    named, decimal, hexadecimal = match.groups()
    if named:
        return _NAMED_ENTITIES[named]
    codepoint = int(decimal) if decimal else int(hexadecimal, 16)
    if 0 < codepoint <= 0x10FFFF and not 0xD800 <= codepoint <= 0xDFFF:
        return chr(codepoint)
    return match.group(0)


def _tag_end(html: str, start: int) -> int:
    """Index just past the ``>`` closing the tag opened at ``start``, or -1.

    A ``>`` inside a quoted attribute value does not close the tag.
    """
    quote = ""
    for i in range(start + 1, len(html)):
        ch = html[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == ">":
            return i + 1
    return -1


def visible_text(html: str) -> str:
    """The text Telegram shows for ``html`` sent with ``parse_mode=HTML``.

    Tags are dropped; ``&lt; &gt; &amp; &quot;`` and numeric entities are
    decoded; anything else (a stray ``&``, an unknown named entity) is shown
    as written.
    """
    out: list[str] = []
    i = 0
    while i < len(html):
        lt = html.find("<", i)
        if lt < 0:
            out.append(_ENTITY.sub(_decode_entity, html[i:]))
            break
        out.append(_ENTITY.sub(_decode_entity, html[i:lt]))
        end = _tag_end(html, lt)
        if end < 0:  # no closing '>': not a tag, shown as written
            out.append(_ENTITY.sub(_decode_entity, html[lt:]))
            break
        i = end
    return "".join(out)


def cut(text: str, limit: int) -> str:
    """``text`` shortened (with an ellipsis) to a :func:`telegram_length` of at most ``limit``."""
    if telegram_length(text) <= limit:
        return text
    # The ellipsis is one code point; a dropped character cut off only shortens it.
    return text[: max(limit - len(ELLIPSIS), 0)].rstrip() + ELLIPSIS


def html_to_plain(html: str, limit: int = TELEGRAM_LIMIT) -> str:
    """The text to send without ``parse_mode`` when Telegram refused the HTML.

    It is what the reader would have seen (:func:`visible_text`), shortened to
    ``limit`` if the HTML was not produced by :func:`render`.
    """
    return cut(visible_text(html).strip(), limit)


def fits(html: str, limit: int = TELEGRAM_LIMIT) -> bool:
    """Whether Telegram takes ``html`` as one message: its shown text within ``limit``
    and the HTML within the Bot API's size limit."""
    return (
        telegram_length(visible_text(html)) <= limit
        and len(html.encode("utf-8")) <= TELEGRAM_SOURCE_LIMIT
    )
