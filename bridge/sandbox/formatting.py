"""Telegram's text formatting, as TDLib implements it: the HTML parse mode, the
text Telegram keeps of a message, and the length it limits.

Everything here follows TDLib (``td/telegram/MessageEntity.cpp``: ``parse_html``,
``decode_html_entity``, ``fix_formatted_text``; ``td/telegram/misc.cpp``:
``clean_input_string``; ``td/telegram/LinkManager.cpp``: ``check_link``;
``tdutils/td/utils/HttpUrl.cpp``: ``parse_url``), which the Bot API server runs
for ``parse_mode=HTML``. The parser works on the UTF-8 bytes, as TDLib does, so
the byte offsets in its errors are TDLib's. Entity offsets and lengths are in
UTF-16 code units.

Where the double deliberately does less than Telegram, it says so:

* TDLib's ``fix_entities`` (merging adjacent entities of one kind, dropping
  continuous entities that intersect) is not done: the entities are reported
  as the HTML nests them.
* A ``tg://user?id=`` link becomes a ``text_mention`` without asking whether the
  bot may see that user.
* The entities Telegram finds in the text itself (``find_entities``: URLs,
  mentions, hashtags, commands) are not added.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "MESSAGE_LIMIT",
    "SOURCE_LIMIT",
    "Entity",
    "EntityParseError",
    "TextRefused",
    "checked_link",
    "is_url",
    "kept_text",
    "parse_html",
    "to_integer",
    "utf16_len",
]

#: ``message_text_length_max``: Unicode code points of the text Telegram keeps
#: (TDLib's ``utf8_length`` after ``fix_formatted_text``; MessageContent.cpp).
MESSAGE_LIMIT = 4096
#: The Bot API refuses a ``text`` parameter over 32 KiB of UTF-8, markup
#: included, before parsing it (telegram-bot-api Client.cpp get_formatted_text).
SOURCE_LIMIT = 1 << 15


class EntityParseError(Exception):
    """TDLib's parse error; the Bot API answers "Bad Request: can't parse entities: <it>"."""


class TextRefused(Exception):
    """Telegram refuses the text itself; ``str(exc)`` is TDLib's message."""


def utf16_len(text: str) -> int:
    """UTF-16 code units: the unit of entity offsets and lengths."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


# TDLib's MessageEntity::Type names, and the order sort_entities puts entities
# of the same offset and length in (get_type_priority).
_PRIORITY = {
    "Bold": 90,
    "Italic": 91,
    "Code": 20,
    "Pre": 11,
    "PreCode": 10,
    "TextUrl": 49,
    "MentionName": 49,
    "Underline": 92,
    "Strikethrough": 93,
    "BlockQuote": 0,
    "Spoiler": 94,
    "CustomEmoji": 99,
    "ExpandableBlockQuote": 0,
    "FormattedDate": 30,
}
_BOT_API_TYPE = {
    "Bold": "bold",
    "Italic": "italic",
    "Code": "code",
    "Pre": "pre",
    "PreCode": "pre",
    "TextUrl": "text_link",
    "MentionName": "text_mention",
    "Underline": "underline",
    "Strikethrough": "strikethrough",
    "BlockQuote": "blockquote",
    "Spoiler": "spoiler",
    "CustomEmoji": "custom_emoji",
    "ExpandableBlockQuote": "expandable_blockquote",
    "FormattedDate": "date_time",
}

# FormattedDate flags (td/telegram/FormattedDate.h).
_RELATIVE, _SHORT_TIME, _LONG_TIME, _SHORT_DATE, _LONG_DATE, _DAY_OF_WEEK = 1, 2, 4, 8, 16, 32


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity. ``kind`` is TDLib's type name; ``argument`` the URL of a
    TextUrl or the language of a PreCode; ``number`` the user id of a
    MentionName, the emoji id of a CustomEmoji or the date of a FormattedDate."""

    kind: str
    offset: int
    length: int
    argument: str = ""
    number: int = 0
    date_flags: int = 0

    def to_bot_api(self) -> dict[str, Any]:
        """The entity as the Bot API's MessageEntity object."""
        out: dict[str, Any] = {
            "type": _BOT_API_TYPE[self.kind],
            "offset": self.offset,
            "length": self.length,
        }
        if self.kind == "TextUrl":
            out["url"] = self.argument
        elif self.kind == "PreCode":
            out["language"] = self.argument
        elif self.kind == "MentionName":
            out["user"] = {"id": self.number, "is_bot": False, "first_name": ""}
        elif self.kind == "CustomEmoji":
            out["custom_emoji_id"] = str(self.number)
        elif self.kind == "FormattedDate":
            out["unix_time"] = self.number
            if self.date_flags:
                out["date_time_format"] = _date_format(self.date_flags)
        return out


def _date_format(flags: int) -> str:
    # The Bot API's grammar "r|w?[dD]?[tT]?", from td_api's dateTimeFormattingType
    # (FormattedDate::get_date_time_formatting_type_object: short wins over long).
    if flags & _RELATIVE:
        return "r"
    out = "w" if flags & _DAY_OF_WEEK else ""
    out += "d" if flags & _SHORT_DATE else "D" if flags & _LONG_DATE else ""
    out += "t" if flags & _SHORT_TIME else "T" if flags & _LONG_TIME else ""
    return out


def _sorted(entities: list[Entity]) -> list[Entity]:
    # MessageEntity::operator<: offset, then the longer first, then type priority.
    return sorted(entities, key=lambda e: (e.offset, -e.length, _PRIORITY[e.kind]))


# ---------------------------------------------------------------- td/utils/misc.h


def _is_space(c: int) -> bool:  # td::is_space: the string's terminating NUL counts
    return c in (0x20, 0x09, 0x0D, 0x0A, 0x00, 0x0B)


def _is_alpha(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _is_digit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _is_hex_digit(c: int) -> bool:
    return _is_digit(c) or 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66


def to_integer(text: str, bits: int) -> int:
    """td::to_integer<intN>: an optional '-', the leading digits, wrapped to N bits."""
    negative = text.startswith("-")
    mask = (1 << bits) - 1
    value = 0
    for ch in text[1:] if negative else text:
        if not "0" <= ch <= "9":
            break
        value = (value * 10 + ord(ch) - 0x30) & mask  # no int(str): it has a digit limit
    value = (-value if negative else value) & mask
    return value - (1 << bits) if value >> (bits - 1) else value


def _to_integer_safe(text: str, bits: int) -> int | None:
    """td::to_integer_safe: the number only if it is written exactly as printed."""
    value = to_integer(text, bits)
    return value if str(value) == text else None


# ------------------------------------------------------------------ the HTML parser

# The start tags parse_html knows; any other is refused.
_INLINE_TAGS = b"a b strong i em s strike del u ins span tg-spoiler tg-emoji tg-time"
_TAGS = frozenset([*_INLINE_TAGS.split(), b"pre", b"code", b"blockquote"])
_NAMED = {b"lt": ord("<"), b"gt": ord(">"), b"amp": ord("&"), b"quot": ord('"')}
_NOT_IN_ATTRIBUTE_NAME = frozenset(b"=>/\"'")


def _decode_html_entity(data: bytes, pos: int) -> tuple[int, int]:
    """(code point, position after it), or (0, pos) when ``&`` starts no entity."""

    def at(i: int) -> int:
        return data[i] if i < len(data) else 0

    end = pos + 1
    code = 0
    if at(pos + 1) == ord("#"):
        end += 1
        if at(pos + 2) == ord("x"):
            end += 1
            while _is_hex_digit(at(end)):
                code = (code * 16 + int(chr(at(end)), 16)) & 0xFFFFFFFF
                end += 1
        else:
            while _is_digit(at(end)):
                code = (code * 10 + at(end) - 0x30) & 0xFFFFFFFF
                end += 1
        # U+10FFFF itself is refused too (">="), and so is anything 10+ bytes long.
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return 0, pos
    else:
        while _is_alpha(at(end)):
            end += 1
        code = _NAMED.get(data[pos + 1 : end], 0)
        if code == 0:
            return 0, pos  # an unknown name is kept as written, '&' and all
    if at(end) == ord(";"):
        end += 1
    return code, end


def _utf8(code: int) -> bytes:
    # Surrogates are encoded as TDLib's append_utf8_character_unsafe does; the
    # final check (check_utf8) refuses them.
    return chr(code).encode("utf-8", "surrogatepass")


@dataclass
class _Open:
    tag: bytes
    argument: bytes
    date: int
    offset: int  # UTF-16 units of text before it
    begin: int  # bytes of text before it


def parse_html(text: str) -> tuple[str, list[Entity]]:
    """The text and entities of ``text`` sent with ``parse_mode=HTML``, or EntityParseError.

    ``text`` must be Unicode (no lone surrogates): the Bot API refuses other
    strings before they reach the parser.
    """
    data = text.encode("utf-8")
    if b"\0" in data:
        raise EntityParseError("Text must not contain null bytes")

    def at(i: int) -> int:
        return data[i] if i < len(data) else 0  # C's terminating NUL

    def name(raw: bytes) -> str:
        return raw.decode("utf-8", "replace")

    out = bytearray()
    utf16 = 0
    opened: list[_Open] = []
    entities: list[Entity] = []
    i = 0
    while i < len(data):
        c = data[i]
        if c == ord("&"):
            code, end = _decode_html_entity(data, i)
            if code:
                utf16 += 2 if code > 0xFFFF else 1
                out += _utf8(code)
                i = end
                continue
        if c != ord("<"):
            if c & 0xC0 != 0x80:  # the first byte of a character
                utf16 += 2 if c >= 0xF0 else 1
            out.append(c)
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != ord("/"):
            while not _is_space(at(i)) and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
            tag = data[begin + 1 : i].lower()
            if tag not in _TAGS:
                raise EntityParseError(
                    f'Unsupported start tag "{name(tag)}" at byte offset {begin}'
                )
            argument = b""
            date = 0
            while at(i) != ord(">"):
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == ord(">"):
                    break
                attribute_begin = i
                while not _is_space(at(i)) and at(i) not in _NOT_IN_ATTRIBUTE_NAME:
                    i += 1
                attribute = data[attribute_begin:i]
                if not attribute:
                    raise EntityParseError(
                        f'Empty attribute name in the tag "{name(tag)}" at byte offset {begin}'
                    )
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) != ord("="):
                    if at(i) == 0:
                        raise EntityParseError(
                            f'Unclosed start tag "{name(tag)}" at byte offset {begin}'
                        )
                    if tag == b"blockquote" and attribute == b"expandable":
                        argument = b"1"
                    continue  # an attribute without a value
                i += 1
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == 0:
                    raise EntityParseError(
                        f'Unclosed start tag "{name(tag)}" at byte offset {begin}'
                    )
                value = bytearray()
                if at(i) not in (ord("'"), ord('"')):
                    # A name token: letters, digits, periods and hyphens; not case sensitive.
                    token_begin = i
                    while _is_alpha(at(i)) or _is_digit(at(i)) or at(i) in b".-":
                        i += 1
                    value += data[token_begin:i].lower()
                    if not _is_space(at(i)) and at(i) != ord(">"):
                        raise EntityParseError(
                            f"Unexpected end of name token at byte offset {token_begin}"
                        )
                else:
                    quote = at(i)
                    i += 1
                    while at(i) != quote and at(i) != 0:
                        if at(i) == ord("&"):
                            code, end = _decode_html_entity(data, i)
                            if code:
                                value += _utf8(code)
                                i = end
                                continue
                        value.append(at(i))
                        i += 1
                    if at(i) == quote:
                        i += 1
                if at(i) == 0:
                    raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
                if tag == b"a" and attribute == b"href":
                    argument = bytes(value)
                elif tag == b"code" and attribute == b"class" and value.startswith(b"language-"):
                    argument = bytes(value[9:])
                elif tag == b"span" and attribute == b"class" and value.startswith(b"tg-"):
                    argument = bytes(value[3:])
                elif tag == b"tg-emoji" and attribute == b"emoji-id":
                    argument = bytes(value)
                elif tag == b"blockquote" and attribute == b"expandable":
                    argument = b"1"
                elif tag == b"tg-time" and attribute == b"unix":
                    date = to_integer(name(bytes(value)), 32)
                elif tag == b"tg-time" and attribute == b"format":
                    argument = bytes(value)
            if tag == b"span" and argument != b"spoiler":
                raise EntityParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {begin}'
                )
            opened.append(_Open(tag, argument, date, utf16, len(out)))
        else:
            if not opened:
                raise EntityParseError(f"Unexpected end tag at byte offset {begin}")
            while not _is_space(at(i)) and at(i) != ord(">"):
                i += 1
            end_tag = data[begin + 2 : i].lower()
            while _is_space(at(i)) and at(i) != 0:
                i += 1
            if at(i) != ord(">"):
                raise EntityParseError(f"Unclosed end tag at byte offset {begin}")
            top = opened[-1]
            if end_tag and end_tag != top.tag:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {begin}, expected "</{name(top.tag)}>", '
                    f'found "</{name(end_tag)}>"'
                )
            if utf16 > top.offset:
                _close(top, utf16 - top.offset, bytes(out[top.begin :]), entities)
            opened.pop()
        i += 1  # past the '>'
    if opened:
        raise EntityParseError(
            f'Can\'t find end tag corresponding to start tag "{name(opened[-1].tag)}"'
        )
    entities = [replace(e, argument="") if e.kind == "Code" else e for e in entities]
    try:
        shown = out.decode("utf-8")
    except UnicodeDecodeError:
        # The input was Unicode: only a decoded entity (half a surrogate pair,
        # need_recheck_utf8) can have made the bytes invalid.
        raise EntityParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units"
        ) from None
    return shown, _sorted(entities)


def _close(top: _Open, length: int, inner: bytes, entities: list[Entity]) -> None:
    """The entity of a closed, non-empty tag, appended to (or merged into) ``entities``."""
    tag, offset = top.tag, top.offset
    kind = {
        b"i": "Italic",
        b"em": "Italic",
        b"b": "Bold",
        b"strong": "Bold",
        b"s": "Strikethrough",
        b"strike": "Strikethrough",
        b"del": "Strikethrough",
        b"u": "Underline",
        b"ins": "Underline",
        b"tg-spoiler": "Spoiler",
        b"span": "Spoiler",  # the only span there is: class="tg-spoiler"
    }.get(tag)
    argument = top.argument.decode("utf-8", "surrogatepass")
    last = entities[-1] if entities else None
    same_span = last is not None and last.offset == offset and last.length == length
    if kind is not None:
        entities.append(Entity(kind, offset, length))
    elif tag == b"tg-emoji":
        emoji_id = _to_integer_safe(argument, 64)
        if not emoji_id:
            raise EntityParseError("Invalid custom emoji identifier specified")
        entities.append(Entity("CustomEmoji", offset, length, number=emoji_id))
    elif tag == b"tg-time":
        flags = _date_flags(argument)
        if top.date > 0:
            entities.append(
                Entity("FormattedDate", offset, length, number=top.date, date_flags=flags)
            )
    elif tag == b"a":
        url = argument or inner.decode("utf-8", "surrogatepass")
        user_id = _link_user_id(url)
        if user_id:
            entities.append(Entity("MentionName", offset, length, number=user_id))
        elif checked := checked_link(url):
            entities.append(Entity("TextUrl", offset, length, checked))
    elif tag == b"pre":
        if same_span and last is not None and last.kind == "Code" and last.argument:
            entities[-1] = replace(last, kind="PreCode")
        else:
            entities.append(Entity("Pre", offset, length))
    elif tag == b"code":
        if same_span and last is not None and last.kind == "Pre" and argument:
            entities[-1] = replace(last, kind="PreCode", argument=argument)
        else:
            entities.append(Entity("Code", offset, length, argument))
    else:  # blockquote
        kind = "ExpandableBlockQuote" if argument else "BlockQuote"
        entities.append(Entity(kind, offset, length))


def _date_flags(date_format: str) -> int:
    """FormattedDate::get_date_flags."""
    if date_format in ("r", "R"):
        return _RELATIVE
    letters = {
        "t": _SHORT_TIME,
        "T": _LONG_TIME,
        "d": _SHORT_DATE,
        "D": _LONG_DATE,
        "w": _DAY_OF_WEEK,
        "W": _DAY_OF_WEEK,
    }
    flags = 0
    for letter in date_format:
        if letter not in letters:
            raise EntityParseError("Invalid date format used")
        flags |= letters[letter]
    return flags


# -------------------------------------------------------------------------- links

_MAX_USER_ID = (1 << 40) - 1  # UserId::is_valid


def _link_user_id(url: str) -> int:
    """LinkManager::get_link_user_id: the user of a tg://user?id= link, or 0."""
    url = _ascii_lower(url)
    if not url.startswith("tg:"):
        return 0
    url = url[3:]
    url = url.removeprefix("//")
    if not url.startswith("user"):
        return 0
    url = url[4:].removeprefix("/")
    if not url.startswith("?"):
        return 0
    for parameter in url[1:].partition("#")[0].split("&"):
        key, _, value = parameter.partition("=")
        if key == "id":
            user_id = _to_integer_safe(value, 64)
            return user_id if user_id is not None and 0 < user_id <= _MAX_USER_ID else 0
    return 0


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(ch) + 32) if "A" <= ch <= "Z" else ch for ch in text)


@dataclass(frozen=True, slots=True)
class _Url:
    https: bool
    userinfo: str
    host: str
    is_ipv6: bool
    specified_port: int
    query: str

    def get_url(self) -> str:
        port = f":{self.specified_port}" if self.specified_port > 0 else ""
        userinfo = f"{self.userinfo}@" if self.userinfo else ""
        scheme = "https" if self.https else "http"
        return f"{scheme}://{userinfo}{self.host}{port}{self.query}"


class _BadUrl(Exception):
    pass


_HOST_SYMBOLS = frozenset("abcdefghijklmnopqrstuvwxyz.0123456789-_!$,~*'();&+=")


def _parse_url(url: str) -> _Url:
    """td::parse_url with HTTP as the default protocol."""
    scheme_end = next((k for k, ch in enumerate(url) if ch in ":/?#@[]"), len(url))
    https = False
    rest = url
    if url.startswith("://", scheme_end):
        scheme = _ascii_lower(url[:scheme_end])
        if scheme not in ("http", "https"):
            raise _BadUrl("Unsupported URL protocol")
        https = scheme == "https"
        rest = url[scheme_end + 3 :]
    authority_end = next((k for k, ch in enumerate(rest) if ch in "/?#"), len(rest))
    authority, query = rest[:authority_end], rest[authority_end:]

    port = 0
    colon = len(authority) - 1
    while colon > 0 and authority[colon] not in ":]@":
        colon -= 1
    userinfo_host = authority
    if colon > 0 and authority[colon] == ":":
        port_text = authority[colon + 1 :]
        while len(port_text) > 1 and port_text[0] == "0":
            port_text = port_text[1:]
        parsed = _to_integer_safe(port_text, 32)
        port = parsed if parsed else -1
        userinfo_host = authority[:colon]
    if not 0 <= port <= 65535:
        raise _BadUrl("Wrong port number specified in the URL")
    userinfo, _, host = userinfo_host.rpartition("@")

    is_ipv6 = host.startswith("[") and host.endswith("]") and len(host) >= 2
    if is_ipv6:
        try:
            if "%" in host:  # inet_pton takes no zone index
                raise ValueError(host)
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _BadUrl("Wrong IPv6 address specified in the URL") from None
    if not host:
        raise _BadUrl("URL host is empty")
    if host == ".":
        raise _BadUrl("Host is invalid")

    query = query.rstrip(" \t\r\n\0\v") or "/"
    query = ("" if query.startswith("/") else "/") + "".join(
        f"%{ord(ch):02X}" if ord(ch) <= 0x20 else ch for ch in query
    )

    host = _ascii_lower(host)
    k = 0
    while k < len(host):
        ch = host[k]
        if is_ipv6:
            if k in (0, len(host) - 1) or ch in ":0123456789abcdef.":
                k += 1
                continue
            raise _BadUrl("Wrong IPv6 URL host")
        if ch in _HOST_SYMBOLS or ord(ch) >= 0x80:  # RFC 7230/3986 symbols, or plain UTF-8
            k += 1
            continue
        if ch == "%" and re.fullmatch(r"[0-9a-f]{2}", host[k + 1 : k + 3]):
            k += 3
            continue
        raise _BadUrl("Wrong percent-encoded symbol in URL host" if ch == "%" else "Wrong URL host")
    return _Url(https, userinfo, host, is_ipv6, port, query)


def is_url(url: str) -> bool:
    """Whether td::parse_url takes ``url`` (how the Bot API checks a webhook URL)."""
    try:
        _parse_url(url)
    except _BadUrl:
        return False
    return True


def checked_link(link: str) -> str:
    """LinkManager::get_checked_link: the link as Telegram stores it, or "" if invalid."""
    try:
        return _check_link(link)
    except _BadUrl:
        return ""


def _check_link(link: str) -> str:
    lowered = _ascii_lower(link[:8])
    scheme = next((s for s in ("tg", "ton", "tonsite") if lowered.startswith(f"{s}:")), "")
    if scheme:
        link = link[len(scheme) + 1 :].removeprefix("//")
    url = _parse_url(link)
    if scheme:
        if (
            _ascii_lower(link[:7]) == "http://"
            or url.https
            or url.userinfo
            or url.specified_port
            or url.is_ipv6
        ):
            raise _BadUrl("Wrong tg URL" if scheme == "tg" else "Wrong ton URL")
        query = url.query[1:] if url.query.startswith("/?") else url.query
        for ch in url.host:
            if (
                not (ch.isascii() and ch.isalnum())
                and ch not in "-_"
                and not (scheme == "tonsite" and ch == ".")
            ):
                raise _BadUrl("Unallowed characters in URL host")
        return f"{scheme}://{url.host}{query}"
    if "." not in url.host and not url.is_ipv6:
        raise _BadUrl("Wrong HTTP URL")
    return url.get_url()


# --------------------------------------------------------- the text Telegram keeps

# clean_input_string: control characters become spaces, '\r' goes, and so do
# U+2028..U+202E and three combining marks (U+030A, U+0333, U+033F).
_CONTROL = frozenset(chr(c) for c in range(0x21) if c not in (0x0A, 0x0D))
_DROPPED = frozenset("\r\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u030a\u0333\u033f")
_OFFENDING = re.compile("[\u200e\u200f]{2,}")
# strip_empty_characters: what makes a text "empty" though it is not "".
_SPACE_LIKE = frozenset(
    "\u1680\u180e\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u2800\u3000\ufffc"
) | frozenset(chr(c) for c in range(0xE0000, 0xE0080))  # and the tag characters
_INVISIBLE = frozenset(" \n\u200b\u200c\u200d\u200e\u200f\u202e\ufeff\u00a0")


def kept_text(text: str, entities: Sequence[Entity] = ()) -> tuple[str, list[Entity]]:
    """What Telegram keeps of a message: TDLib's fix_formatted_text, then its length check.

    Control characters become spaces; ``\\r``, U+2028..U+202E and U+030A/U+0333/
    U+033F are dropped; spaces and newlines are trimmed from the end, and from
    the start up to the first entity. Raises TextRefused with TDLib's message
    if nothing visible is left or more than :data:`MESSAGE_LIMIT` code points are.
    """
    chars: list[str] = []
    # UTF-16 offset of every position of the original text -> of the cleaned text
    new_offset: dict[int, int] = {}
    old = new = 0
    for ch in text:
        new_offset[old] = new
        units = 2 if ord(ch) > 0xFFFF else 1
        old += units
        if ch in _DROPPED:
            continue
        chars.append(" " if ch in _CONTROL else ch)
        new += units
    new_offset[old] = new
    cleaned = _OFFENDING.sub(
        lambda m: "\u200c" * (len(m.group(0)) - 1) + m.group(0)[-1], "".join(chars)
    )
    moved = [
        replace(
            e,
            offset=new_offset[e.offset],
            length=new_offset[e.offset + e.length] - new_offset[e.offset],
        )
        for e in entities
    ]
    moved = [e for e in moved if e.length > 0]

    kept = cleaned.rstrip(" \n")
    if not kept:
        raise TextRefused("Text must be non-empty")
    end = utf16_len(kept)
    moved = [replace(e, length=min(e.length, end - e.offset)) for e in moved if e.offset < end]
    first = min((e.offset for e in moved), default=len(kept))
    lead = len(kept) - len(kept.lstrip(" \n"))
    lead = min(lead, first)  # leading blanks are ASCII: one unit each
    kept = kept[lead:]
    moved = _sorted([replace(e, offset=e.offset - lead) for e in moved])

    visible = "".join(" " if ch in _SPACE_LIKE else ch for ch in kept)
    if all(ch in _INVISIBLE for ch in visible.strip(" \t\r\n\0\v")):
        raise TextRefused("Text must be non-empty")
    if len(kept) > MESSAGE_LIMIT:  # code points: TDLib's utf8_length
        raise TextRefused("Message is too long")
    return kept, moved
