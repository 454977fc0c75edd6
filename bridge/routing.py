"""Alertmanager's matcher grammar and an Alertmanager-style route tree (pure).

Operators already know Alertmanager's routing; the bridge speaks the same
language so a route copied from alertmanager.yml means the same thing here.

Matchers are read the way Alertmanager >= 0.27 reads them by default, its
"fallback" mode (matcher/compat in its source): both of its parsers read the
text; the classic parser's reading (pkg/labels) is used whenever it has one,
the UTF-8 parser's (matcher/parse) otherwise, and the text is refused only
when both refuse it. Both parsers are ported rule for rule, errors included,
and regexes run on RE2, the engine whose syntax and semantics Go's regexp
implements: `.` stops at a newline, `(?i)` works anywhere, and lookarounds
and backreferences are refused, as Alertmanager refuses them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import re2

from bridge.errors import ConfigError
from bridge.models import Destination

log = logging.getLogger(__name__)


class Op(enum.Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


class _Pattern(Protocol):
    def search(self, text: str) -> object | None: ...


class _Refused(Exception):
    """Alertmanager refuses the text; the message is Alertmanager's own wording
    (except where it comes from the regex engine, which words it its own way)."""

    def __init__(self, reason: str, *, in_regex: bool = False) -> None:
        super().__init__(reason)
        self.in_regex = in_regex


class _EndOfInput(_Refused):
    """Go's errEOF: some parser states accept it, the others report it."""

    def __init__(self) -> None:
        super().__init__("end of input")


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is a config error, not a line on stderr


def _go_regexp(pattern: str) -> _Pattern:
    """Go's regexp.Compile: RE2 syntax, refused where Go refuses it."""
    if _has_any_byte_escape(pattern):
        raise _Refused("error parsing regexp: invalid escape sequence: `\\C`", in_regex=True)
    try:
        return cast(_Pattern, re2.compile(pattern, _RE2_OPTIONS))
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        reason = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise _Refused(f"error parsing regexp: {reason}", in_regex=True) from None
    except UnicodeError:
        raise _Refused("error parsing regexp: invalid UTF-8", in_regex=True) from None


def _has_any_byte_escape(pattern: str) -> bool:
    # RE2 reads \C as "any byte"; Go's regexp (so Alertmanager) refuses it.
    i, literal = 0, False
    while i < len(pattern) - 1:
        pair = pattern[i : i + 2]
        if literal:
            literal = pair != "\\E"
            i += 2 if pair == "\\E" else 1
            continue
        if pair == "\\C":
            return True
        literal = pair == "\\Q"
        i += 2 if pattern[i] == "\\" else 1
    return False


def _encodable(text: str) -> str:
    # Go's JSON decoder turns a lone surrogate into U+FFFD before any matcher
    # sees it; Python's keeps it, and RE2 cannot encode it.
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: _Pattern | None = field(default=None, compare=False, repr=False)

    def matches_value(self, actual: str) -> bool:
        if self.op is Op.EQUAL:
            return actual == self.value
        if self.op is Op.NOT_EQUAL:
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.search(_encodable(actual)) is not None
        return found if self.op is Op.REGEX else not found

    def matches(self, labels: Mapping[str, str]) -> bool:
        # As in Alertmanager, a missing label is the empty string.
        return self.matches_value(labels.get(self.name, ""))

    def __str__(self) -> str:
        # Alertmanager's Matcher.String, which reads back to the same matcher.
        if any(_is_reserved(char) for char in self.name):
            return f"{_go_quote(self.name)}{self.op.value}{_go_quote(self.value)}"
        escaped = self.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        return f'{self.name}{self.op.value}"{escaped}"'


def _new_matcher(op: Op, name: str, value: str) -> Matcher:
    pattern = None
    if op in (Op.REGEX, Op.NOT_REGEX):
        # Alertmanager anchors every regex this way, so `=~"crit"` does not
        # match "critical" (and `a)|(b` is a valid, oddly anchored pattern).
        pattern = _go_regexp(f"^(?:{value})$")
    return Matcher(name, op, value, pattern)


def make_matcher(name: str, op: Op, value: str) -> Matcher:
    try:
        return _new_matcher(op, name, value)
    except _Refused as exc:
        raise ConfigError(
            f"invalid regular expression {value!r} for label {name!r}: {exc}"
        ) from None


# Go's unicode.IsSpace (Python's str.isspace also counts \x1c-\x1f).
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _is_reserved(char: str) -> bool:
    return char in _GO_SPACE or char in "{}!=~,\\\"'`"


def _go_trim_space(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in _GO_SPACE:
        start += 1
    while end > start and text[end - 1] in _GO_SPACE:
        end -= 1
    return text[start:end]


_GO_CHAR_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_CHAR_ESCAPES["\v"] = "\\v"


def _go_quote(text: str) -> str:
    """Go's strconv.Quote (Python's isprintable is Go's unicode.IsPrint)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in _GO_CHAR_ESCAPES:
            out.append(_GO_CHAR_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_SIMPLE_ESCAPES = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
    '"': b'"',
}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS = frozenset("01234567")


def _go_unquote(quoted: str) -> str | None:
    """Go's strconv.Unquote of a "double-quoted" literal, and then the UTF-8
    check Alertmanager adds; None where either refuses. \\x and octal escapes
    are bytes, so `\\xf0\\x9f\\x99\\x82` is one emoji and `\\xf0` alone is refused."""
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char == "\n":
            return None
        if char != "\\":
            try:
                out += char.encode("utf-8")
            except UnicodeEncodeError:
                return None
            i += 1
            continue
        kind = body[i + 1 : i + 2]
        i += 2
        if kind in _GO_SIMPLE_ESCAPES:
            out += _GO_SIMPLE_ESCAPES[kind]
        elif kind in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i : i + width]
            if len(digits) < width or not set(digits) <= _HEX_DIGITS:
                return None
            i += width
            code = int(digits, 16)
            if kind == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return None
            else:
                out += chr(code).encode("utf-8")
        elif kind in _OCTAL_DIGITS:
            digits = body[i - 1 : i + 2]
            if len(digits) < 3 or not set(digits) <= _OCTAL_DIGITS or int(digits, 8) > 255:
                return None
            i += 2
            out.append(int(digits, 8))
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- The UTF-8 parser: matcher/parse/lexer.go and parse.go ------------------
#
# Positions are Go's columns (runes), which are a Python string's indexes; Go
# slices by byte offsets, which land on the same characters.


class _Kind(enum.Enum):
    EOF = enum.auto()
    OPEN_BRACE = enum.auto()
    CLOSE_BRACE = enum.auto()
    COMMA = enum.auto()
    EQUALS = enum.auto()
    NOT_EQUALS = enum.auto()
    MATCHES = enum.auto()
    NOT_MATCHES = enum.auto()
    QUOTED = enum.auto()
    UNQUOTED = enum.auto()


_OPERATORS = {
    _Kind.EQUALS: Op.EQUAL,
    _Kind.NOT_EQUALS: Op.NOT_EQUAL,
    _Kind.MATCHES: Op.REGEX,
    _Kind.NOT_MATCHES: Op.NOT_REGEX,
}


@dataclass(frozen=True)
class _Token:
    kind: _Kind = _Kind.EOF
    value: str = ""
    start: int = 0
    end: int = 0

    def unquoted(self) -> str:
        if self.kind is not _Kind.QUOTED:
            return self.value
        text = _go_unquote(self.value)
        if text is None:
            raise _Refused(f"{self.start}:{self.end}: {self.value}: invalid input")
        return text


class _Lexer:
    def __init__(self, text: str) -> None:
        self.input = text
        self.error: _Refused | None = None  # once refused, every later scan says so
        self.start = 0
        self.pos = 0
        self.width = 0

    def scan(self) -> _Token:
        if self.error is not None:
            raise self.error
        try:
            return self._scan()
        except _Refused as exc:
            self.error = exc
            raise

    def peek(self) -> _Token:
        saved = (self.start, self.pos, self.width)
        try:
            return self.scan()
        finally:
            self.start, self.pos, self.width = saved

    def _scan(self) -> _Token:
        while (char := self._next()) is not None:
            if char == "{":
                return self._emit(_Kind.OPEN_BRACE)
            if char == "}":
                return self._emit(_Kind.CLOSE_BRACE)
            if char == ",":
                return self._emit(_Kind.COMMA)
            if char in "=!":
                self._rewind()
                return self._scan_operator()
            if char == '"':
                self._rewind()
                return self._scan_quoted()
            if not _is_reserved(char):
                self._rewind()
                return self._scan_unquoted()
            if char in _GO_SPACE:
                self.start = self.pos
                continue
            raise _Refused(f"{self.start}:{self.pos}: {self._text()}: invalid input")
        return _Token()

    def _scan_operator(self) -> _Token:
        if self._accept("!"):
            if self._accept("="):
                return self._emit(_Kind.NOT_EQUALS)
            if self._accept("~"):
                return self._emit(_Kind.NOT_MATCHES)
            raise self._expected("=~")
        if self._accept("="):
            if self._accept("~"):
                return self._emit(_Kind.MATCHES)
            return self._emit(_Kind.EQUALS)
        raise self._expected("!=")

    def _scan_quoted(self) -> _Token:
        self._accept('"')
        escaped = False
        while (char := self._next()) is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                self._rewind()
                break
        if not self._accept('"'):
            raise _Refused(f'{self.start}:{self.pos}: {self._text()}: missing end "')
        return self._emit(_Kind.QUOTED)

    def _scan_unquoted(self) -> _Token:
        while (char := self._next()) is not None:
            if _is_reserved(char):
                self._rewind()
                break
        return self._emit(_Kind.UNQUOTED)

    def _expected(self, expected: str) -> _Refused:
        if self.pos >= len(self.input):
            return _Refused(
                f"{self.start}:{self.pos}: unexpected end of input, expected one of '{expected}'"
            )
        return _Refused(f"{self.start}:{self.pos}: {self._text()}: expected one of '{expected}'")

    def _text(self) -> str:
        return self.input[self.start : self.pos]

    def _accept(self, valid: str) -> bool:
        char = self._next()
        if char is not None and char in valid:
            return True
        self._rewind()
        return False

    def _emit(self, kind: _Kind) -> _Token:
        token = _Token(kind, self._text(), self.start, self.pos)
        self.start = self.pos
        return token

    def _next(self) -> str | None:
        if self.pos >= len(self.input):
            self.width = 0
            return None
        self.width = 1
        self.pos += 1
        return self.input[self.pos - 1]

    def _rewind(self) -> None:
        self.pos -= self.width


_State = Callable[[], "_State | None"]


class _Utf8Parser:
    """parse.go's finite state machine, one method a state."""

    def __init__(self, text: str) -> None:
        self.lexer = _Lexer(text)
        self.matchers: list[Matcher] = []
        self.has_open_brace = False

    def parse(self) -> list[Matcher]:
        state: _State | None = self.open_brace
        while state is not None:
            state = state()
        return self.matchers

    def open_brace(self) -> _State | None:
        try:
            self.has_open_brace = self._accept(_Kind.OPEN_BRACE)
        except _EndOfInput:
            return self.end_of_input
        try:
            has_close_brace = self._accept_peek(_Kind.CLOSE_BRACE)
        except _EndOfInput:
            return self.close_brace
        return self.close_brace if has_close_brace else self.matcher

    def close_brace(self) -> _State | None:
        if self.has_open_brace:
            try:
                self._expect(_Kind.CLOSE_BRACE)
            except _Refused as exc:
                raise _Refused(f"0:{self.lexer.pos}: {exc}: expected close brace") from None
        else:
            try:
                self._expect(_Kind.CLOSE_BRACE)
            except _Refused:
                pass
            else:
                raise _Refused(f"0:{self.lexer.pos}: }}: expected opening brace")
        return self.end_of_input

    def matcher(self) -> _State | None:
        try:
            token = self._expect(_Kind.QUOTED, _Kind.UNQUOTED)
        except _Refused as exc:
            raise _Refused(f"{exc}: expected label name") from None
        name = token.unquoted()
        try:
            token = self._expect(*_OPERATORS)
        except _Refused as exc:
            raise _Refused(f"{exc}: expected an operator such as '=', '!=', '=~' or '!~'") from None
        op = _OPERATORS[token.kind]
        try:
            token = self._expect(_Kind.UNQUOTED, _Kind.QUOTED)
        except _Refused as exc:
            raise _Refused(f"{exc}: expected label value") from None
        value = token.unquoted()
        try:
            self.matchers.append(_new_matcher(op, name, value))
        except _Refused as exc:
            raise _Refused(f"failed to create matcher: {exc}", in_regex=exc.in_regex) from None
        return self.end_of_matcher

    def end_of_matcher(self) -> _State | None:
        try:
            token = self._expect_peek(_Kind.COMMA, _Kind.CLOSE_BRACE)
        except _EndOfInput:
            return self.close_brace
        except _Refused as exc:
            raise _Refused(f"{exc}: expected a comma or close brace") from None
        return self.comma if token.kind is _Kind.COMMA else self.close_brace

    def comma(self) -> _State | None:
        try:
            self._expect(_Kind.COMMA)
        except _Refused as exc:
            raise _Refused(f"{exc}: expected a comma") from None
        try:
            token = self._expect_peek(_Kind.CLOSE_BRACE, _Kind.UNQUOTED, _Kind.QUOTED)
        except _EndOfInput:
            return self.close_brace
        except _Refused as exc:
            raise _Refused(f"{exc}: expected a matcher or close brace after comma") from None
        return self.close_brace if token.kind is _Kind.CLOSE_BRACE else self.matcher

    def end_of_input(self) -> _State | None:
        try:
            token = self.lexer.scan()
        except _Refused as exc:
            raise _Refused(f"{exc}: expected end of input") from None
        if token.kind is not _Kind.EOF:
            raise _Refused(f"{token.start}:{token.end}: {token.value}: expected end of input")
        return None

    def _accept(self, *kinds: _Kind) -> bool:
        accepted = self._accept_peek(*kinds)
        if accepted:
            self.lexer.scan()
        return accepted

    def _accept_peek(self, *kinds: _Kind) -> bool:
        token = self.lexer.peek()
        if token.kind is _Kind.EOF:
            raise _EndOfInput()
        return token.kind in kinds

    def _expect(self, *kinds: _Kind) -> _Token:
        token = self._expect_peek(*kinds)
        self.lexer.scan()
        return token

    def _expect_peek(self, *kinds: _Kind) -> _Token:
        token = self.lexer.peek()
        if token.kind is _Kind.EOF:
            raise _EndOfInput()
        if token.kind not in kinds:
            raise _Refused(f"{token.start}:{token.end}: unexpected {token.value}")
        return token


def _utf8_matchers(text: str) -> list[Matcher]:
    return _Utf8Parser(text).parse()


def _utf8_matcher(text: str) -> Matcher:
    found = _utf8_matchers(text)
    if not found:
        raise _Refused("no matchers")
    if len(found) > 1:
        raise _Refused(f"expected 1 matcher, found {len(found)}")
    return found[0]


# --- The classic parser: pkg/labels/parse.go ---------------------------------

# Alertmanager's own expression, run by RE2 as Go runs it ('=~' before '=').
_CLASSIC_MATCHER = cast(
    Any,
    re2.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*((?s).*?)\s*$", _RE2_OPTIONS),
)
_CLASSIC_OPS = {"=": Op.EQUAL, "!=": Op.NOT_EQUAL, "=~": Op.REGEX, "!~": Op.NOT_REGEX}


def _classic_matchers(text: str) -> list[Matcher]:
    # Braces are optional and trimmed once each; commas outside quotes split.
    text = text.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = escaped = False
    for char in text:
        if char == ",":
            if not inside_quotes:
                tokens.append("".join(token))
                token = []
                continue
        elif char == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(char)
    last = _go_trim_space("".join(token))
    if last:
        tokens.append(last)
    return [_classic_matcher(part) for part in tokens]


def _classic_matcher(text: str) -> Matcher:
    found = _CLASSIC_MATCHER.search(_encodable(text))
    if found is None:
        raise _Refused(f"bad matcher format: {text}")
    name, op, raw = (str(part) for part in found.groups())
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    # Tolerant by design: a backslash before anything but n, " or \ is kept,
    # and a line feed may stand as it is.
    value: list[str] = []
    expect_closing_quote, escaped = quoted, False
    last = len(body) - 1
    for i, char in enumerate(body):
        if escaped:
            escaped = False
            value.append("\n" if char == "n" else char if char in '"\\' else "\\" + char)
        elif char == "\\":
            if i < last:
                escaped = True
            else:
                value.append("\\")
        elif char == '"':
            if not expect_closing_quote or i < last:
                raise _Refused(f"matcher value contains unescaped double quote: {raw}")
            expect_closing_quote = False
        else:
            value.append(char)
    if expect_closing_quote:
        raise _Refused(f"matcher value contains unescaped double quote: {raw}")
    return _new_matcher(_CLASSIC_OPS[op], name, "".join(value))


# --- Alertmanager's default: matcher/compat's fallback mode ------------------

_T = TypeVar("_T", list[Matcher], Matcher)


@dataclass(frozen=True)
class _Reading:
    found: Any
    fell_back: str  # why the classic parser's reading was used; "" where both agree


def _fall_back(text: str, utf8: Callable[[str], _T], classic: Callable[[str], _T]) -> _Reading:
    try:
        utf8_found, utf8_refusal = utf8(text), None
    except _Refused as exc:
        utf8_found, utf8_refusal = None, exc
    try:
        classic_found = classic(text)
    except _Refused as exc:
        if utf8_refusal is not None:
            raise _BothRefused(exc, utf8_refusal) from None
        return _Reading(utf8_found, "")
    if utf8_refusal is not None:
        return _Reading(classic_found, f"its UTF-8 parser refuses it ({utf8_refusal})")
    if utf8_found != classic_found:
        return _Reading(classic_found, "its UTF-8 parser reads it differently")
    return _Reading(utf8_found, "")


class _BothRefused(_Refused):
    """Alertmanager reports the classic parser's refusal; the bridge adds the
    UTF-8 parser's, which says where the text went wrong."""

    def __init__(self, classic: _Refused, utf8: _Refused) -> None:
        reason = str(classic) if classic.in_regex else f"{classic} (as UTF-8 matchers: {utf8})"
        super().__init__(reason, in_regex=classic.in_regex)


_HOW = (
    'write it as name="value", name!="value", name=~"regex" or name!~"regex", '
    "several separated by commas"
)


def _refusal(text: str, exc: _Refused) -> ConfigError:
    return ConfigError(f"matcher {text!r}: {exc}; {_HOW}")


def _read_matchers(text: str) -> _Reading:
    try:
        return _fall_back(text, _utf8_matchers, _classic_matchers)
    except _Refused as exc:
        raise _refusal(text, exc) from None


def parse_matchers(text: str) -> list[Matcher]:
    """Zero or more matchers, as an entry of Alertmanager's `matchers:` list:
    `severity="critical"`, `{a="b", c=~"d|e"}`, `a=b,c!=d`; "" is none."""
    found: list[Matcher] = _read_matchers(text).found
    return found


def parse_matcher(text: str) -> Matcher:
    """Exactly one matcher, as Alertmanager reads one (amtool, silences)."""
    try:
        if text.startswith("{") or text.endswith("}"):
            raise _Refused(f"unexpected open or close brace: {text}")
        found: Matcher = _fall_back(text, _utf8_matcher, _classic_matcher).found
    except _Refused as exc:
        raise _refusal(text, exc) from None
    return found


def _strict(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    def parse_or_refuse(text: str) -> _T:
        try:
            return parse(text)
        except _Refused as exc:
            raise _refusal(text, exc) from None

    return parse_or_refuse


# Each of Alertmanager's parsers on its own, as its own test tables exercise them.
parse_utf8_matchers = _strict(_utf8_matchers)
parse_utf8_matcher = _strict(_utf8_matcher)
parse_classic_matchers = _strict(_classic_matchers)


@dataclass(frozen=True)
class Route:
    matchers: tuple[Matcher, ...] = ()
    chats: tuple[int, ...] | None = None  # None: inherit from the parent
    thread_id: int | None = None
    template: str | None = None
    silent: tuple[Matcher, ...] | None = None  # silent when all of these match
    continue_: bool = False
    routes: tuple[Route, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


_ROUTE_KEYS = {"matchers", "chats", "thread_id", "template", "silent", "continue", "routes"}


def _matcher_list(value: Any, path: str) -> tuple[Matcher, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{path}: expected a list of matcher strings")
    out: list[Matcher] = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ConfigError(f'{path}[{i}]: expected a matcher string like severity="critical"')
        try:
            reading = _read_matchers(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}[{i}]: {exc}") from exc
        if reading.fell_back:
            # Alertmanager warns here too: its next default may read it otherwise.
            log.warning(
                "%s[%d]: %r is read with Alertmanager's classic matcher parser, as Alertmanager "
                "reads it, because %s; to be read the same by both, write it as %s",
                path,
                i,
                text,
                reading.fell_back,
                ",".join(map(str, reading.found)),
            )
        out.extend(reading.found)
    return tuple(out)


def build_route(spec: Mapping[str, Any], path: str = "route") -> Route:
    unknown = set(spec) - _ROUTE_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ROUTE_KEYS)}"
        )
    chats = spec.get("chats")
    if chats is not None and not (
        isinstance(chats, Sequence)
        and all(isinstance(c, int) and not isinstance(c, bool) for c in chats)
    ):
        raise ConfigError(f"{path}.chats: expected a list of chat ids (integers)")
    children = spec.get("routes") or []
    return Route(
        matchers=_matcher_list(spec.get("matchers") or [], f"{path}.matchers"),
        chats=None if chats is None else tuple(chats),
        thread_id=spec.get("thread_id"),
        template=spec.get("template"),
        silent=None
        if spec.get("silent") is None
        else _matcher_list(spec["silent"], f"{path}.silent"),
        continue_=bool(spec.get("continue", False)),
        routes=tuple(build_route(child, f"{path}.routes[{i}]") for i, child in enumerate(children)),
    )


@dataclass(frozen=True)
class _Effective:
    chats: tuple[int, ...]
    thread_id: int | None
    template: str
    silent: tuple[Matcher, ...]


def _inherit(route: Route, parent: _Effective) -> _Effective:
    return _Effective(
        chats=parent.chats if route.chats is None else route.chats,
        thread_id=parent.thread_id if route.thread_id is None else route.thread_id,
        template=parent.template if route.template is None else route.template,
        silent=parent.silent if route.silent is None else route.silent,
    )


def _walk(route: Route, settings: _Effective, labels: Mapping[str, str]) -> list[_Effective]:
    # Alertmanager's dispatch/route.go Match: a route that matches descends
    # into its children in order and stops at the first that matches, unless
    # that one has `continue`; a route none of whose children matched is
    # itself the result. (The config refuses matchers on the root, as
    # Alertmanager does, so the root always matches.)
    if not route.matches(labels):
        return []
    found: list[_Effective] = []
    for child in route.routes:
        matched = _walk(child, _inherit(child, settings), labels)
        found.extend(matched)
        if matched and not child.continue_:
            break
    return found or [settings]


def resolve(root: Route, labels: Mapping[str, str]) -> list[Destination]:
    """Where a notification with these (common) labels goes; first-seen order, no duplicates."""
    start = _inherit(root, _Effective(chats=(), thread_id=None, template="default", silent=()))
    seen: set[tuple[int, int | None]] = set()
    out: list[Destination] = []
    for node in _walk(root, start, labels):
        silent = bool(node.silent) and all(m.matches(labels) for m in node.silent)
        for chat in node.chats:
            if (chat, node.thread_id) in seen:
                continue
            seen.add((chat, node.thread_id))
            out.append(Destination(chat, node.thread_id, node.template, silent))
    return out


def describe(root: Route) -> str:
    """The tree as indented text, for `alertbridge check-config`."""
    lines: list[str] = []

    def visit(route: Route, depth: int) -> None:
        parts = ["{" + ", ".join(map(str, route.matchers)) + "}" if route.matchers else "(all)"]
        if route.chats is not None:
            parts.append(f"chats={list(route.chats)}")
        if route.thread_id is not None:
            parts.append(f"thread={route.thread_id}")
        if route.template is not None:
            parts.append(f"template={route.template}")
        if route.silent is not None:
            parts.append("silent={" + ", ".join(map(str, route.silent)) + "}")
        if route.continue_:
            parts.append("continue")
        lines.append("  " * depth + ("route " if depth == 0 else "└ ") + " ".join(parts))
        for child in route.routes:
            visit(child, depth + 1)

    visit(root, 0)
    return "\n".join(lines)
