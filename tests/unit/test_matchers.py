"""Matchers and routes mean what they mean in Alertmanager >= 0.27.

Alertmanager's own tables are in test_matchers_alertmanager.py; here are the
cases that bit operators (each checked against `amtool`), RE2's regex
semantics, Alertmanager's route-tree table, and the config-file forms.
"""

from __future__ import annotations

import logging
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config_file import parse_config
from bridge.errors import ConfigError
from bridge.models import Destination
from bridge.routing import Op, build_route, make_matcher, parse_matchers, resolve
from tests.unit.test_config import MINIMAL

EQ, NE, RE, NRE = Op.EQUAL, Op.NOT_EQUAL, Op.REGEX, Op.NOT_REGEX

# What Alertmanager reads, where a bridge that read otherwise routed wrong or
# refused a config that Alertmanager accepts.
AS_ALERTMANAGER_READS_THEM = [
    ("severity=critical,team=ops", [("severity", EQ, "critical"), ("team", EQ, "ops")]),
    ('severity="critical", team="ops"', [("severity", EQ, "critical"), ("team", EQ, "ops")]),
    ("severity=critical,", [("severity", EQ, "critical")]),
    ("foo=bar}", [("foo", EQ, "bar")]),
    ('{foo="bar"', [("foo", EQ, "bar")]),
    ('"foo"="bar",', [("foo", EQ, "bar")]),
    ('"foo"="bar","baz"!="qux"', [("foo", EQ, "bar"), ("baz", NE, "qux")]),
    (r'instance=~"db-\d+"', [("instance", RE, r"db-\d+")]),
    (r'host=~"api\.example\.com"', [("host", RE, r"api\.example\.com")]),
    (r'foo="\xf0\x9f\x99\x82"', [("foo", EQ, r"\xf0\x9f\x99\x82")]),
    (r'foo="\U0001f642"', [("foo", EQ, r"\U0001f642")]),
    ('severity=~"(?i)warn"', [("severity", RE, "(?i)warn")]),
    (r"foo=bar\n", [("foo", EQ, "bar\n")]),
    ("", []),
    ("{}", []),
    ('"service name"="web 🙂"', [("service name", EQ, "web 🙂")]),
]


@pytest.mark.parametrize(
    ("text", "expected"), AS_ALERTMANAGER_READS_THEM, ids=[t for t, _ in AS_ALERTMANAGER_READS_THEM]
)
def test_matchers_read_as_alertmanager_reads_them(text, expected) -> None:
    assert [(m.name, m.op, m.value) for m in parse_matchers(text)] == expected


# Regexes are RE2's, as in Go: anchored to the whole value, `.` stops at a
# newline, `$` is the end of the text, flags work, classes are ASCII.
REGEX_SEMANTICS = [
    (r"db-\d+", "db-12", True),
    (r"db-\d+", "db-x", False),
    (r"db-\d+", "db-١٢", False),  # \d is ASCII in RE2 (Python's re would match)
    (r"api\.example\.com", "apixexample.com", False),
    ("crit", "critical", False),
    ("crit", "crit\n", False),  # $ is the end of the text, not before a final newline
    ("foo.bar", "foo\nbar", False),
    ("(?s)foo.bar", "foo\nbar", True),
    ("(?i)warn", "WARN", True),
    ("(?i)warn", "warning", False),
    ("warn(?i)ING", "warnING", True),
    ("[[:alpha:]]+", "abc", True),  # POSIX classes (Python's re reads a set of characters)
    ("[[:alpha:]]+", ":", False),
    (r"\pL+", "héllo", True),
    (r"\Qa.b\E", "a.b", True),
    (r"\Qa.b\E", "axb", False),
    (r"\w+", "é", False),
    (".*", "", True),
    # Go anchors by wrapping, `^(?:` + pattern + `)$`, so this pattern
    # matches anything that starts with a or ends with b; so does the bridge.
    ("a)|(b", "a-anything", True),
    ("a)|(b", "anything-b", True),
    ("a)|(b", "neither", False),
]


@pytest.mark.parametrize(
    ("pattern", "label", "expected"),
    REGEX_SEMANTICS,
    ids=[f"{p!r} on {v!r}" for p, v, _ in REGEX_SEMANTICS],
)
def test_regexes_are_re2(pattern: str, label: str, expected: bool) -> None:
    assert make_matcher("x", RE, pattern).matches_value(label) is expected
    assert make_matcher("x", NRE, pattern).matches_value(label) is not expected


@pytest.mark.parametrize(
    "pattern",
    ["(?=x)x", "(?!x)y", "(?<=x)y", r"(a)\1", "x**", "a{1001}", r"\C", "[regexp", "(("],
)
def test_what_go_refuses_is_refused(pattern: str) -> None:
    with pytest.raises(ConfigError, match="error parsing regexp"):
        parse_matchers(f'x=~"{pattern}"')


def test_a_lone_surrogate_in_a_label_does_not_break_matching() -> None:
    # JSON may carry "\ud800"; Go would have made it U+FFFD.
    assert make_matcher("x", RE, ".").matches_value("\ud800")
    assert make_matcher("x", RE, "\ufffd").matches_value("\ud800")


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@given(names, st.sampled_from([EQ, NE]), values)
def test_the_canonical_form_reads_back_as_the_same_matcher(name, op, value) -> None:
    matcher = make_matcher(name, op, value)
    assert parse_matchers(str(matcher)) == [matcher]


# dispatch/route_test.go, TestRouteMatchers: Alertmanager's tree, receivers
# made chats (notify-def -1, notify-A -2, notify-testing -3,
# notify-productionA -4, notify-productionB -5, notify-BC -6).
AM_TREE = textwrap.dedent(
    """\
    chats: [-1]
    routes:
    - matchers: ['{owner="team-A"}', '{level!="critical"}']
      chats: [-2]
      routes:
      - matchers: ['{env="testing"}', '{baz!~".*quux"}']
        chats: [-3]
      - matchers: ['{env="production"}']
        chats: [-4]
        continue: true
      - matchers: [ env=~"produ.*", job=~".*"]
        chats: [-5]
    - matchers: [owner=~"team-(B|C)"]
      chats: [-6]
    - matchers: [group_by="role"]
      routes:
      - matchers: ['{env="testing"}']
        chats: [-3]
        routes:
        - matchers: [wait="long"]
    """
)


@pytest.mark.parametrize(
    ("labels", "chats"),
    [
        ({"owner": "team-A"}, [-2]),
        ({"owner": "team-A", "env": "unset"}, [-2]),
        ({"owner": "team-C"}, [-6]),
        ({"owner": "team-A", "env": "testing"}, [-3]),
        ({"owner": "team-A", "env": "production"}, [-4, -5]),
        ({"group_by": "role"}, [-1]),
        ({"env": "testing", "group_by": "role"}, [-3]),
        ({"env": "testing", "group_by": "role", "wait": "long"}, [-3]),
    ],
)
def test_alertmanagers_route_table(labels, chats) -> None:
    import yaml

    tree = build_route(yaml.safe_load(AM_TREE))
    assert [d.chat_id for d in resolve(tree, labels)] == chats


def config_with(matchers: str) -> str:
    return MINIMAL.replace("""['severity="critical"']""", matchers)


def test_one_matchers_entry_may_hold_several_matchers() -> None:
    config = parse_config(config_with("['severity=critical,team=ops']"), environ={})
    tree = config.route_tree()
    assert resolve(tree, {"severity": "critical", "team": "ops"})[0].chat_id == -1002
    # Read as one matcher, this alert would have gone to the critical chat.
    assert resolve(tree, {"severity": "critical", "team": "db"}) == [Destination(-1001)]


def test_a_refused_matcher_names_the_file_line_and_key() -> None:
    with pytest.raises(ConfigError) as refusal:
        parse_config(config_with("""['severity=~"(?=x)"']"""), source="c.yml", environ={})
    message = str(refusal.value)
    assert "c.yml:9: route.routes[0].matchers:" in message
    assert "error parsing regexp" in message


def test_matchers_on_the_root_route_are_refused_as_alertmanager_refuses_them() -> None:
    text = MINIMAL.replace("  chats: [-1001] ", "  matchers: ['team=ops']\n  chats: [-1001] ")
    with pytest.raises(ConfigError) as refusal:
        parse_config(text, source="c.yml", environ={})
    assert "c.yml:6: route: the root route takes every alert" in str(refusal.value)


def test_a_classic_only_matcher_is_read_and_a_warning_says_how_to_write_it(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.routing"):
        route = build_route({"chats": [-1], "routes": [{"matchers": [r"a=b\n"], "chats": [-2]}]})
    assert route.routes[0].matchers[0].value == "b\n"
    (record,) = caplog.records
    assert "route.routes[0].matchers[0]" in record.getMessage()
    assert r'write it as a="b\n"' in record.getMessage()


def test_a_matcher_both_parsers_agree_on_is_read_without_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.routing"):
        build_route({"chats": [-1], "routes": [{"matchers": ["a=b", '{c!~"d|e"}']}]})
    assert caplog.records == []
