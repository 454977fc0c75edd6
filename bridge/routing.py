"""Alertmanager's matcher grammar and an Alertmanager-style route tree (pure).

Operators already know Alertmanager's routing; the bridge speaks the same
language so a route copied from alertmanager.yml means the same thing here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConfigError
from bridge.models import Destination


class Op(enum.Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        # As in Alertmanager, a missing label is the empty string.
        actual = labels.get(self.name, "")
        if self.op is Op.EQUAL:
            return actual == self.value
        if self.op is Op.NOT_EQUAL:
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op is Op.REGEX else not found

    def __str__(self) -> str:
        name = self.name if _PLAIN_NAME.fullmatch(self.name) else _quote(self.name)
        return f"{name}{self.op.value}{_quote(self.value)}"


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _quote(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def make_matcher(name: str, op: Op, value: str) -> Matcher:
    pattern = None
    if op in (Op.REGEX, Op.NOT_REGEX):
        try:
            # Alertmanager anchors every regex: `=~"crit"` does not match "critical".
            pattern = re.compile(f"(?:{value})", re.DOTALL)
        except re.error as exc:
            raise ConfigError(
                f"invalid regular expression {value!r} for label {name!r}: {exc}"
            ) from exc
    return Matcher(name, op, value, pattern)


class _Parser:
    """A small hand-written scanner: positions in errors matter more than speed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> ConfigError:
        near = self.text[self.pos : self.pos + 10] or "end of input"
        return ConfigError(
            f"matcher {self.text!r}: expected {expected} at position {self.pos} (near {near!r}); "
            'write it as name="value", name!="value", name=~"regex" or name!~"regex"'
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def quoted(self) -> str:
        assert self.text[self.pos] == '"'
        self.pos += 1
        out: list[str] = []
        escapes = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\":
                following = self.text[self.pos + 1 : self.pos + 2]
                if following not in escapes:
                    raise self.fail('a valid escape (\\", \\\\, \\n, \\t)')
                out.append(escapes[following])
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        raise self.fail('a closing "')

    def name(self) -> str:
        self.skip_space()
        if self.at('"'):
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and not (
            self.text[self.pos] in '=!~{},"' or self.text[self.pos].isspace()
        ):
            self.pos += 1
        if self.pos == start:
            raise self.fail("a label name")
        return self.text[start : self.pos]

    def op(self) -> Op:
        self.skip_space()
        for op in (Op.REGEX, Op.NOT_REGEX, Op.NOT_EQUAL, Op.EQUAL):
            if self.at(op.value):
                self.pos += len(op.value)
                return op
        raise self.fail("one of =, !=, =~, !~")

    def value(self, in_braces: bool) -> str:
        self.skip_space()
        if self.at('"'):
            return self.quoted()
        # Unquoted values run to the end (or to the next comma or brace in a
        # list), with surrounding blanks trimmed, as Alertmanager accepts them.
        start = self.pos
        stops = ',}"' if in_braces else '"'
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            raise self.fail("a value that is quoted as a whole")
        return self.text[start : self.pos].strip()

    def matcher(self, in_braces: bool) -> Matcher:
        name = self.name()
        op = self.op()
        value = self.value(in_braces)
        if op in (Op.EQUAL, Op.NOT_EQUAL) and "=" in value[:1]:
            raise self.fail("a value, not a second operator")
        return make_matcher(name, op, value)

    def parse(self) -> list[Matcher]:
        self.skip_space()
        if not self.at("{"):
            found = self.matcher(in_braces=False)
            self.skip_space()
            if self.pos != len(self.text):
                raise self.fail("end of input")
            return [found]
        self.pos += 1
        matchers: list[Matcher] = []
        while True:
            self.skip_space()
            if self.at("}"):
                self.pos += 1
                break
            matchers.append(self.matcher(in_braces=True))
            self.skip_space()
            if self.at(","):
                self.pos += 1
                continue
            if self.at("}"):
                self.pos += 1
                break
            raise self.fail("a comma or a closing }")
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail("end of input after }")
        return matchers


def parse_matchers(text: str) -> list[Matcher]:
    """One matcher (`severity="critical"`) or a brace list (`{a="b", c=~"d|e"}`)."""
    if not text.strip():
        raise ConfigError('an empty matcher; write it as name="value"')
    return _Parser(text).parse()


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
            out.extend(parse_matchers(text))
        except ConfigError as exc:
            raise ConfigError(f"{path}[{i}]: {exc}") from exc
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
    # Alertmanager's dispatch/route.go Match: descend into matching children
    # in order, stop at the first unless it has `continue`; a node none of
    # whose children matched is itself the result.
    found: list[_Effective] = []
    for child in route.routes:
        if not child.matches(labels):
            continue
        found.extend(_walk(child, _inherit(child, settings), labels))
        if not child.continue_:
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
