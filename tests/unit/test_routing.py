"""Routing speaks Alertmanager: its matcher grammar and its tree semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.models import Destination
from bridge.routing import Op, build_route, describe, parse_matchers, resolve

# Examples from Alertmanager's documentation of matchers.
GRAMMAR = [
    ("foo = bar", [("foo", Op.EQUAL, "bar")]),
    ('foo="bar"', [("foo", Op.EQUAL, "bar")]),
    ('foo!~"[a-c]+"', [("foo", Op.NOT_REGEX, "[a-c]+")]),
    ('foo =~ "bar|baz"', [("foo", Op.REGEX, "bar|baz")]),
    ("foo!=bar", [("foo", Op.NOT_EQUAL, "bar")]),
    ('{foo="bar",baz=~"qux|quux"}', [("foo", Op.EQUAL, "bar"), ("baz", Op.REGEX, "qux|quux")]),
    ('{foo="bar", }', [("foo", Op.EQUAL, "bar")]),
    ('"foo bar"="baz"', [("foo bar", Op.EQUAL, "baz")]),
    ('foo="a \\"quoted\\" b"', [("foo", Op.EQUAL, 'a "quoted" b')]),
    ('foo="back\\\\slash"', [("foo", Op.EQUAL, "back\\slash")]),
    ('foo="🙂"', [("foo", Op.EQUAL, "🙂")]),
    ('{ a = "1" , b != "2" }', [("a", Op.EQUAL, "1"), ("b", Op.NOT_EQUAL, "2")]),
    ('foo=""', [("foo", Op.EQUAL, "")]),
]


@pytest.mark.parametrize(("text", "expected"), GRAMMAR, ids=[t for t, _ in GRAMMAR])
def test_the_matcher_grammar(text, expected) -> None:
    assert [(m.name, m.op, m.value) for m in parse_matchers(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        'foo=~"(("',
        'foo=="x"',
        'foo="unterminated',
        "foo",
        "=bar",
        '{foo="bar"} x',
        "foo!bar",
    ],
)
def test_invalid_matchers_are_config_errors_that_say_how(text) -> None:
    with pytest.raises(ConfigError, match='write it as name="value"'):
        parse_matchers(text)


def test_regexes_are_anchored() -> None:
    (matcher,) = parse_matchers('severity=~"crit"')
    assert not matcher.matches({"severity": "critical"})
    assert matcher.matches({"severity": "crit"})


def test_a_missing_label_is_the_empty_string() -> None:
    (empty,) = parse_matchers('team=""')
    (not_empty,) = parse_matchers('team!=""')
    assert empty.matches({}) and empty.matches({"team": ""})
    assert not empty.matches({"team": "db"})
    assert not_empty.matches({"team": "db"}) and not not_empty.matches({})


def test_canonical_form_round_trips() -> None:
    for text, _ in GRAMMAR:
        for matcher in parse_matchers(text):
            assert parse_matchers(str(matcher)) == [matcher]


TREE = build_route(
    {
        "chats": [-1],
        "template": "default",
        "silent": ['severity="info"'],
        "routes": [
            {"matchers": ['severity="critical"'], "chats": [-2], "continue": True},
            {
                "matchers": ['team="db"'],
                "chats": [-10],
                "thread_id": 7,
                "template": "compact",
                "routes": [{"matchers": ['severity=~"critical|warning"'], "chats": [-11]}],
            },
            {"matchers": ['team="web"'], "chats": [-20]},
            {"matchers": ['team="web"'], "chats": [-21]},  # shadowed: no continue above
            {"matchers": ['team="void"'], "chats": []},
        ],
    }
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, [Destination(-1)]),
        ({"severity": "info"}, [Destination(-1, silent=True)]),
        ({"severity": "critical"}, [Destination(-2)]),
        ({"team": "db", "severity": "info"}, [Destination(-10, 7, "compact", silent=True)]),
        ({"team": "db", "severity": "warning"}, [Destination(-11, 7, "compact")]),
        (
            {"team": "db", "severity": "critical"},
            [Destination(-2), Destination(-11, 7, "compact")],
        ),
        ({"team": "web"}, [Destination(-20)]),
        ({"team": "void"}, []),
    ],
)
def test_the_route_tree(labels, expected) -> None:
    assert resolve(TREE, labels) == expected


def test_duplicates_are_dropped_first_wins() -> None:
    tree = build_route(
        {
            "chats": [-1],
            "routes": [
                {"matchers": ['a="1"'], "chats": [-5], "continue": True},
                {"matchers": ['a="1"'], "chats": [-5, -6], "template": "other"},
            ],
        }
    )
    assert resolve(tree, {"a": "1"}) == [Destination(-5), Destination(-6, template="other")]


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"route\.routes\[0\]"):
        build_route({"chats": [-1], "routes": [{"matcher": ['a="1"']}]})


def test_describe_shows_the_tree() -> None:
    text = describe(TREE)
    assert 'team="db"' in text and "thread=7" in text and "continue" in text


label_values = st.sampled_from(["", "critical", "warning", "info", "db", "web", "<&>"])


@given(st.fixed_dictionaries({}, optional={"severity": label_values, "team": label_values}))
def test_resolve_never_duplicates_and_falls_back_to_the_root(labels) -> None:
    found = resolve(TREE, labels)
    keys = [(d.chat_id, d.thread_id) for d in found]
    assert len(keys) == len(set(keys))
    if labels.get("severity") != "critical" and labels.get("team") not in {"db", "web", "void"}:
        assert [d.chat_id for d in found] == [-1]
