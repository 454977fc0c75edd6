"""The double's HTML parse mode against TDLib's own table.

Every ``check_parse_html`` case of TDLib's ``test/message_entities.cpp``
(``TEST(MessageEntities, parse_html)`` and ``parse_html_pre_code_adversarial_light_fuzz``),
in order: the input, then TDLib's error message or the text and entities it
expects. Entities are written with TDLib's type names; offsets and lengths are
UTF-16 code units. The Bot API answers a parse error as
"Bad Request: can't parse entities: <TDLib's message>".
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sandbox.formatting import Entity, EntityParseError, checked_link, parse_html

SURROGATE = (
    "Text contains invalid Unicode characters after decoding HTML entities, "
    "check for unmatched surrogate code units"
)
A = "➡️ ➡️"  # 5 UTF-16 units: two BMP characters each, a space between
S = "🏟 🏟"  # 5 UTF-16 units: astral characters are two each; 9 bytes of UTF-8


def e(kind: str, offset: int, length: int, argument: str = "", number: int = 0, flags: int = 0):
    return Entity(kind, offset, length, argument, number, flags)


ERRORS = [
    ("&#57311;", SURROGATE),
    ("&#xDFDF;", SURROGATE),
    ("&#xDFDF", SURROGATE),
    (f"{S}&lt;<abacaba", "Unclosed start tag at byte offset 13"),
    (f"{S}&lt;<abac aba>", 'Unsupported start tag "abac" at byte offset 13'),
    (f"{S}&lt;<abac>", 'Unsupported start tag "abac" at byte offset 13'),
    (f"{S}&lt;<i   =aba>", 'Empty attribute name in the tag "i" at byte offset 13'),
    (f"{S}&lt;<i    aba>", 'Can\'t find end tag corresponding to start tag "i"'),
    (f"{S}&lt;<i    aba  =  ", 'Unclosed start tag "i" at byte offset 13'),
    (f"{S}&lt;<i    aba  =  190azAz-.,", "Unexpected end of name token at byte offset 27"),
    (f'{S}&lt;<i    aba  =  "&lt;&gt;&quot;>', "Unclosed start tag at byte offset 13"),
    (f"{S}&lt;<i    aba  =  '&lt;&gt;&quot;>", "Unclosed start tag at byte offset 13"),
    (f"{S}&lt;</", "Unexpected end tag at byte offset 13"),
    (f"{S}&lt;<b></b></", "Unexpected end tag at byte offset 20"),
    (f"{S}&lt;<i>a</i   ", "Unclosed end tag at byte offset 17"),
    (f"{S}&lt;<i>a</em   >", 'Unmatched end tag at byte offset 17, expected "</i>", found "</em>"'),
    (
        f'{A}<tg-time unix = "12345", format = "rt">{A}</tg-time><b>{A}</b>',
        "Invalid date format used",
    ),
    (
        f'{A}<tg-time unix = "12345", format = "ts">{A}</tg-time><b>{A}</b>',
        "Invalid date format used",
    ),
]

TWO = f"{A}{A}"  # "➡️ ➡️➡️ ➡️"
THREE = f"{A}{A}{A}"


def date_case(date_format: str, flags: int):
    html = f'{A}<tg-time unix = "12345", format = "{date_format}">{A}</tg-time><b>{A}</b>'
    return html, THREE, [e("FormattedDate", 5, 5, number=12345, flags=flags), e("Bold", 10, 5)]


PARSED = [
    ("", "", []),
    (A, A, []),
    (
        "&ge;&lt;&gt;&amp;&quot;&laquo;&raquo;&#12345678;",
        '&ge;<>&"&laquo;&raquo;&#12345678;',
        [],
    ),
    ("&Or;", "&Or;", []),
    (f"{A}<i>{A}</i>", TWO, [e("Italic", 5, 5)]),
    (f"{A}<em>{A}</em>", TWO, [e("Italic", 5, 5)]),
    (f"{A}<b>{A}</b>", TWO, [e("Bold", 5, 5)]),
    (f"{A}<strong>{A}</strong>", TWO, [e("Bold", 5, 5)]),
    (f"{A}<u>{A}</u>", TWO, [e("Underline", 5, 5)]),
    (f"{A}<ins>{A}</ins>", TWO, [e("Underline", 5, 5)]),
    (f"{A}<s>{A}</s>", TWO, [e("Strikethrough", 5, 5)]),
    (f"{A}<strike>{A}</strike>", TWO, [e("Strikethrough", 5, 5)]),
    (f"{A}<del>{A}</del>", TWO, [e("Strikethrough", 5, 5)]),
    (f"{A}<blockquote>{A}</blockquote>", TWO, [e("BlockQuote", 5, 5)]),
    (f"{A}<i>{A}</i><b>{A}</b>", THREE, [e("Italic", 5, 5), e("Bold", 10, 5)]),
    (f"{S}<i>🏟 &lt🏟</i>", "🏟 🏟🏟 <🏟", [e("Italic", 5, 6)]),
    (
        f"{S}<i>🏟 &gt;<b aba   =   caba>&lt🏟</b></i>",
        "🏟 🏟🏟 ><🏟",
        [e("Italic", 5, 7), e("Bold", 9, 3)],
    ),
    (f"{S}&lt;<i    aba  =  190azAz-.   >a</i>", f"{S}<a", [e("Italic", 6, 1)]),
    (f"{S}&lt;<i    aba  =  190azAz-.>a</i>", f"{S}<a", [e("Italic", 6, 1)]),
    (f'{S}&lt;<i    aba  =  "&lt;&gt;&quot;">a</i>', f"{S}<a", [e("Italic", 6, 1)]),
    (f"{S}&lt;<i    aba  =  '&lt;&gt;&quot;'>a</i>", f"{S}<a", [e("Italic", 6, 1)]),
    (f"{S}&lt;<i    aba  =  '&lt;&gt;&quot;'>a</>", f"{S}<a", [e("Italic", 6, 1)]),
    (f"{S}&lt;<i>{S}&lt;</>", f"{S}<{S}<", [e("Italic", 6, 6)]),
    (f"{S}&lt;<i>a</    >", f"{S}<a", [e("Italic", 6, 1)]),
    (f"{S}&lt;<i>a</i   >", f"{S}<a", [e("Italic", 6, 1)]),
    (f"{S}&lt;<b></b>", f"{S}<", []),
    ("<i>\t</i>", "\t", [e("Italic", 0, 1)]),
    ("<i>\r</i>", "\r", [e("Italic", 0, 1)]),
    ("<i>\n</i>", "\n", [e("Italic", 0, 1)]),
    (
        f'{A}<span class = "tg-spoiler">{A}</span><b>{A}</b>',
        THREE,
        [e("Spoiler", 5, 5), e("Bold", 10, 5)],
    ),
    (f'{S}<span class="tg-spoiler">🏟 &lt🏟</span>', "🏟 🏟🏟 <🏟", [e("Spoiler", 5, 6)]),
    (
        f'{S}<span class="tg-spoiler">🏟 &gt;<b aba   =   caba>&lt🏟</b></span>',
        "🏟 🏟🏟 ><🏟",
        [e("Spoiler", 5, 7), e("Bold", 9, 3)],
    ),
    (f"{A}<tg-spoiler>{A}</tg-spoiler><b>{A}</b>", THREE, [e("Spoiler", 5, 5), e("Bold", 10, 5)]),
    (f"{S}<tg-spoiler>🏟 &lt🏟</tg-spoiler>", "🏟 🏟🏟 <🏟", [e("Spoiler", 5, 6)]),
    (
        f"{S}<tg-spoiler>🏟 &gt;<b aba   =   caba>&lt🏟</b></tg-spoiler>",
        "🏟 🏟🏟 ><🏟",
        [e("Spoiler", 5, 7), e("Bold", 9, 3)],
    ),
    ("<a href=telegram.org>\t</a>", "\t", [e("TextUrl", 0, 1, "http://telegram.org/")]),
    ("<a href=telegram.org>\r</a>", "\r", [e("TextUrl", 0, 1, "http://telegram.org/")]),
    ("<a href=telegram.org>\n</a>", "\n", [e("TextUrl", 0, 1, "http://telegram.org/")]),
    (
        "<code><i><b> </b></i></code><i><b><code> </code></b></i>",
        "  ",
        [
            e("Code", 0, 1),
            e("Bold", 0, 1),
            e("Italic", 0, 1),
            e("Code", 1, 1),
            e("Bold", 1, 1),
            e("Italic", 1, 1),
        ],
    ),
    (
        "<i><b> </b> <code> </code></i>",
        "   ",
        [e("Italic", 0, 3), e("Bold", 0, 1), e("Code", 2, 1)],
    ),
    ("<a href=telegram.org> </a>", " ", [e("TextUrl", 0, 1, "http://telegram.org/")]),
    ('<a href  ="telegram.org"   > </a>', " ", [e("TextUrl", 0, 1, "http://telegram.org/")]),
    ("<a   href=  'telegram.org'   > </a>", " ", [e("TextUrl", 0, 1, "http://telegram.org/")]),
    (
        "<a   href=  'telegram.org?&lt;'   > </a>",
        " ",
        [e("TextUrl", 0, 1, "http://telegram.org/?<")],
    ),
    ("<a> </a>", " ", []),
    ("<a>telegram.org </a>", "telegram.org ", []),
    ("<a>telegram.org</a>", "telegram.org", [e("TextUrl", 0, 12, "http://telegram.org/")]),
    (
        "<a>https://telegram.org/asdsa?asdasdwe#12e3we</a>",
        "https://telegram.org/asdsa?asdasdwe#12e3we",
        [e("TextUrl", 0, 42, "https://telegram.org/asdsa?asdasdwe#12e3we")],
    ),
    (f"{S}&lt;<pre  >{S}&lt;</>", f"{S}<{S}<", [e("Pre", 6, 6)]),
    (f"{S}&lt;<code >{S}&lt;</>", f"{S}<{S}<", [e("Code", 6, 6)]),
    (f"{S}&lt;<pre><code>{S}&lt;</code></>", f"{S}<{S}<", [e("Pre", 6, 6), e("Code", 6, 6)]),
    (
        f'{S}&lt;<pre><code class="language-">{S}&lt;</code></>',
        f"{S}<{S}<",
        [e("Pre", 6, 6), e("Code", 6, 6)],
    ),
    (
        f'{S}&lt;<pre><code class="language-fift">{S}&lt;</></>',
        f"{S}<{S}<",
        [e("PreCode", 6, 6, "fift")],
    ),
    (
        f'{S}&lt;<code class="language-fift"><pre>{S}&lt;</></>',
        f"{S}<{S}<",
        [e("PreCode", 6, 6, "fift")],
    ),
    (
        f'{S}&lt;<pre><code class="language-fift">{S}&lt;</> </>',
        f"{S}<{S}< ",
        [e("Pre", 6, 7), e("Code", 6, 6)],
    ),
    (
        f'{S}&lt;<pre> <code class="language-fift">{S}&lt;</></>',
        f"{S}< {S}<",
        [e("Pre", 6, 7), e("Code", 7, 6)],
    ),
    (
        f'{A}<tg-emoji emoji-id = "12345">{A}</tg-emoji><b>{A}</b>',
        THREE,
        [e("CustomEmoji", 5, 5, number=12345), e("Bold", 10, 5)],
    ),
    (
        f'{S}<tg-emoji emoji-id="54321">🏟 &lt🏟</tg-emoji>',
        "🏟 🏟🏟 <🏟",
        [e("CustomEmoji", 5, 6, number=54321)],
    ),
    (
        f'{S}<b aba   =   caba><tg-emoji emoji-id="1">🏟</tg-emoji>1</b>',
        "🏟 🏟🏟1",
        [e("Bold", 5, 3), e("CustomEmoji", 5, 2, number=1)],
    ),
    date_case("r", 1),
    date_case("t", 2),
    date_case("T", 4),
    date_case("d", 8),
    date_case("D", 16),
    date_case("w", 32),
    date_case("W", 32),
    date_case("tttTTdDwW", 62),
    (
        '<blockquote   cite="" askdlbas nasjdbaj nj12b3>a&lt;<pre  >b;</></>',
        "a<b;",
        [e("BlockQuote", 0, 4), e("Pre", 2, 2)],
    ),
    (
        "<blockquote   expandable>a&lt;<pre  >b;</></>",
        "a<b;",
        [e("ExpandableBlockQuote", 0, 4), e("Pre", 2, 2)],
    ),
    (
        "<blockquote   expandable   asd>a&lt;<pre  >b;</></>",
        "a<b;",
        [e("ExpandableBlockQuote", 0, 4), e("Pre", 2, 2)],
    ),
    (
        "<blockquote   expandable=false>a&lt;<pre  >b;</></>",
        "a<b;",
        [e("ExpandableBlockQuote", 0, 4), e("Pre", 2, 2)],
    ),
]


def _token(size: int) -> str:
    return "".join(chr(ord("a") + i % 26) for i in range(size))


# TEST(MessageEntities, parse_html_pre_code_adversarial_light_fuzz): sizes 1..128.
PRE_CODE = [
    row
    for size in range(1, 129)
    for token in [_token(size)]
    for row in (
        (f"<pre>{token}</pre>", token, [e("Pre", 0, size)]),
        (f"<code>{token}</code>", token, [e("Code", 0, size)]),
        (
            f'<pre><code class="language-fift">{token}</code></pre>',
            token,
            [e("PreCode", 0, size, "fift")],
        ),
        (
            f'<code class="language-fift"><pre>{token}</pre></code>',
            token,
            [e("PreCode", 0, size, "fift")],
        ),
    )
]


@pytest.mark.parametrize(("html", "message"), ERRORS)
def test_tdlib_refuses(html: str, message: str) -> None:
    with pytest.raises(EntityParseError) as error:
        parse_html(html)
    assert str(error.value) == message


@pytest.mark.parametrize(("html", "text", "entities"), PARSED + PRE_CODE)
def test_tdlib_parses(html: str, text: str, entities: list[Entity]) -> None:
    assert parse_html(html) == (text, entities)


# ----------------------------------------------------- beyond TDLib's table, from its code


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("AT&T", "AT&T"),  # '&' starts no entity: kept
        ("&nbsp;&copy;", "&nbsp;&copy;"),  # only lt gt amp quot are known
        ("&lt&gt&amp&quot", '<>&"'),  # the ';' is optional
        ("&LT;", "&LT;"),  # names are case sensitive
        ("&#X41;", "&#X41;"),  # only a lowercase x starts a hex reference
        ("&#x41;&#65;&#0;&#;", "AA&#0;&#;"),
        ("&#1114110;", "\U0010fffe"),
        ("&#1114111;&#x10FFFF;", "&#1114111;&#x10FFFF;"),  # U+10FFFF itself is not decoded
        ("&#x110000;&#99999999;", "&#x110000;&#99999999;"),  # beyond Unicode: kept
        ("&#x0000041;", "&#x0000041;"),  # ten bytes or more: kept
        ("&#x000041;", "A"),
        ("a > b", "a > b"),
    ],
)
def test_entities_telegram_keeps_as_text(html: str, text: str) -> None:
    assert parse_html(html) == (text, [])


def test_surrogate_pair_written_as_two_references_is_refused() -> None:
    with pytest.raises(EntityParseError, match="surrogate"):
        parse_html("&#xD83D;&#xDE00;")


@pytest.mark.parametrize(
    ("html", "message"),
    [
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<a href=http://x>x</a>", "Unexpected end of name token at byte offset 8"),
        ("<b>x</b x>", "Unclosed end tag at byte offset 4"),
        ("<b>x</b >", None),  # spaces before '>' are fine
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<tg-emoji emoji-id="0">x</tg-emoji>', "Invalid custom emoji identifier specified"),
        ('<tg-emoji emoji-id="01">x</tg-emoji>', "Invalid custom emoji identifier specified"),
        ('<tg-emoji emoji-id="1"></tg-emoji>', None),  # empty: no entity, no check
        ("a\0b", "Text must not contain null bytes"),
        ("<b/>", 'Unsupported start tag "b/" at byte offset 0'),
        ("<b />x", 'Empty attribute name in the tag "b" at byte offset 0'),
    ],
)
def test_what_telegram_refuses_beyond_the_table(html: str, message: str | None) -> None:
    if message is None:
        parse_html(html)
        return
    with pytest.raises(EntityParseError) as error:
        parse_html(html)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("html", "entities"),
    [
        ("<a>x</a>", []),  # no href, text no link: a plain text
        ('<a href="tg://user?id=42">x</a>', [e("MentionName", 0, 1, number=42)]),
        ('<a href="TG:USER?ID=7#x">x</a>', [e("MentionName", 0, 1, number=7)]),
        # Not a valid user: an ordinary tg:// link.
        ('<a href="tg://user?id=0">x</a>', [e("TextUrl", 0, 1, "tg://user?id=0")]),
        (
            '<a href="tg://resolve?domain=bot">x</a>',
            [e("TextUrl", 0, 1, "tg://resolve?domain=bot")],
        ),
        ('<a href="ftp://x.org">x</a>', []),
        ('<a href="localhost">x</a>', []),  # a host without a dot
        (
            '<a href="HTTP://Example.COM:0443/P">x</a>',
            [e("TextUrl", 0, 1, "http://example.com:443/P")],
        ),
        ('<tg-time unix="0">x</tg-time>', []),  # no date, no entity
        ('<tg-time unix="1e3">x</tg-time>', [e("FormattedDate", 0, 1, number=1)]),
        ("<b><b>x</b></b>", [e("Bold", 0, 1), e("Bold", 0, 1)]),  # TDLib merges them later
    ],
)
def test_links_mentions_and_dates(html: str, entities: list[Entity]) -> None:
    assert parse_html(html)[1] == entities


@pytest.mark.parametrize(
    ("link", "checked"),
    [
        ("telegram.org", "http://telegram.org/"),
        ("https://telegram.org/a b", "https://telegram.org/a%20b"),
        ("http://user@host.org:8080?q", "http://user@host.org:8080/?q"),
        ("http://[::1]/x", "http://[::1]/x"),
        ("http://[::1", ""),
        ("http://host.org:99999/", ""),
        ("http://ho st.org/", ""),
        ("http://h%zz.org/", ""),
        ("tg:resolve?domain=x", "tg://resolve?domain=x"),
        ("tg://http://x.org", ""),
        ("tonsite://a.ton/p", "tonsite://a.ton/p"),
    ],
)
def test_links_as_telegram_stores_them(link: str, checked: str) -> None:
    assert checked_link(link) == checked


HTML_PIECES = [
    *"<>/&#;=\"' abxi-.0123456789\t\n\r🏟é",
    *("b", "i", "a", "pre", "code", "span", "tg-spoiler", "tg-emoji", "tg-time", "blockquote"),
    *("href=", "class=", "&lt;", "&#x", "&#", "emoji-id=", "unix=", "format=", "language-"),
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(HTML_PIECES), max_size=40).map("".join))
def test_any_html_parses_or_is_refused_with_a_reason(html: str) -> None:
    try:
        text, entities = parse_html(html)
    except EntityParseError as exc:
        assert str(exc)
        return
    units = len(text.encode("utf-16-le")) // 2
    for entity in entities:
        assert 0 <= entity.offset < entity.offset + entity.length <= units


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_unicode_parses_or_is_refused_with_a_reason(html: str) -> None:
    try:
        parse_html(html)
    except EntityParseError as exc:
        assert str(exc)
