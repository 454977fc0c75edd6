"""Alertmanager's own matcher test tables, row by row.

Each table below is one Go test table of prometheus/alertmanager, transcribed
in its order, one row per Go case, with the Go case's name (or, where the Go
test names cases by their input, the input) as the test id:

- matcher/parse/parse_test.go     TestMatchers, TestMatcher (the UTF-8 parser)
- matcher/compat/parse_test.go    TestFallbackMatcherParser, TestFallbackMatchersParser
- pkg/labels/parse_test.go        TestMatchers (the classic parser)
- pkg/labels/matcher_test.go      TestMatcher (Matches), TestMatcherString

Alertmanager >= 0.27 reads config matchers in its default "fallback" mode:
both parsers read the input, the classic parser's reading wins whenever it
has one, and the UTF-8 parser's otherwise. `parse_matchers` is that mode; the
two parsers it combines are tested here on their own tables, so that each row
checks exactly what Alertmanager's test checks.

Rows compare the matchers (name, type, value) or, for an error row, that the
input is refused and that Alertmanager's error text is part of the message.
Where the bridge deliberately differs, the row says why in `differs`; so far
that is only ever the wording of an error that comes from the regex engine
(Go's regexp and RE2 word the same refusal differently).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bridge.errors import ConfigError
from bridge.routing import (
    Matcher,
    Op,
    make_matcher,
    parse_classic_matchers,
    parse_matcher,
    parse_matchers,
    parse_utf8_matcher,
    parse_utf8_matchers,
)

EQ, NE, RE, NRE = Op.EQUAL, Op.NOT_EQUAL, Op.REGEX, Op.NOT_REGEX
Expected = list[tuple[str, Op, str]]


@dataclass(frozen=True)
class Row:
    name: str
    text: str
    want: Expected | None = None  # None: the input is refused
    error: str = ""  # Alertmanager's error text for a refused input
    differs: str = ""  # why the bridge's error wording differs, where it does


def ok(name: str, text: str, *want: tuple[str, Op, str]) -> Row:
    return Row(name, text, list(want))


def refused(name: str, text: str, error: str, differs: str = "") -> Row:
    return Row(name, text, None, error, differs)


def params(rows: list[Row]) -> list[object]:
    return [pytest.param(row, id=row.name) for row in rows]


def check(row: Row, parse) -> None:
    if row.want is None:
        with pytest.raises(ConfigError) as refusal:
            parse(row.text)
        if not row.differs:
            assert row.error in str(refusal.value)
        return
    found = parse(row.text)
    found = found if isinstance(found, list) else [found]
    assert [(m.name, m.op, m.value) for m in found] == row.want


REGEX_WORDING = "the regex engine words the same refusal its own way"

# matcher/parse/parse_test.go, TestMatchers: the UTF-8 parser, zero or more
# matchers. Transcribed from the version that also has the two `\d` rows.
UTF8_MATCHERS = [
    ok("no braces", ""),
    ok("open and closing braces", "{}"),
    ok("equals", "{foo=bar}", ("foo", EQ, "bar")),
    ok("equals with trailing comma", "{foo=bar,}", ("foo", EQ, "bar")),
    ok("not equals", "{foo!=bar}", ("foo", NE, "bar")),
    ok("match regex", "{foo=~[a-z]+}", ("foo", RE, "[a-z]+")),
    ok("doesn't match regex", "{foo!~[a-z]+}", ("foo", NRE, "[a-z]+")),
    ok("equals unicode emoji", "{foo=🙂}", ("foo", EQ, "🙂")),
    ok("equals unicode sentence", "{foo=🙂bar}", ("foo", EQ, "🙂bar")),
    ok("equals without braces", "foo=bar", ("foo", EQ, "bar")),
    ok("equals without braces but with trailing comma", "foo=bar,", ("foo", EQ, "bar")),
    ok("not equals without braces", "foo!=bar", ("foo", NE, "bar")),
    ok("match regex without braces", "foo=~[a-z]+", ("foo", RE, "[a-z]+")),
    ok("doesn't match regex without braces", "foo!~[a-z]+", ("foo", NRE, "[a-z]+")),
    ok("equals in quotes", '{"foo"="bar"}', ("foo", EQ, "bar")),
    ok("equals in quotes and with trailing comma", '{"foo"="bar",}', ("foo", EQ, "bar")),
    ok("not equals in quotes", '{"foo"!="bar"}', ("foo", NE, "bar")),
    ok("match regex in quotes", '{"foo"=~"[a-z]+"}', ("foo", RE, "[a-z]+")),
    ok("match regex digit in quotes", r'{"foo"=~"\\d+"}', ("foo", RE, r"\d+")),
    ok("doesn't match regex in quotes", '{"foo"!~"[a-z]+"}', ("foo", NRE, "[a-z]+")),
    ok("equals unicode emoji in quotes", '{"foo"="🙂"}', ("foo", EQ, "🙂")),
    ok(
        "equals unicode emoji as bytes in quotes",
        r'{"foo"="\xf0\x9f\x99\x82"}',
        ("foo", EQ, "🙂"),
    ),
    ok("equals unicode emoji as code points in quotes", r'{"foo"="\U0001f642"}', ("foo", EQ, "🙂")),
    ok("equals unicode sentence in quotes", '{"foo"="🙂bar"}', ("foo", EQ, "🙂bar")),
    ok("equals with newline in quotes", r'{"foo"="bar\n"}', ("foo", EQ, "bar\n")),
    ok("equals with tab in quotes", r'{"foo"="bar\t"}', ("foo", EQ, "bar\t")),
    ok("equals with escaped quotes in quotes", r'{"foo"="\"bar\""}', ("foo", EQ, '"bar"')),
    ok("equals with escaped backslash in quotes", r'{"foo"="bar\\"}', ("foo", EQ, "bar\\")),
    ok("equals without braces in quotes", '"foo"="bar"', ("foo", EQ, "bar")),
    ok(
        "equals without braces in quotes with trailing comma",
        '"foo"="bar",',
        ("foo", EQ, "bar"),
    ),
    ok("complex", "{foo=bar,bar!=baz}", ("foo", EQ, "bar"), ("bar", NE, "baz")),
    ok("complex in quotes", '{foo="bar",bar!="baz"}', ("foo", EQ, "bar"), ("bar", NE, "baz")),
    ok("complex without braces", "foo=bar,bar!=baz", ("foo", EQ, "bar"), ("bar", NE, "baz")),
    ok(
        "complex without braces in quotes",
        'foo="bar",bar!="baz"',
        ("foo", EQ, "bar"),
        ("bar", NE, "baz"),
    ),
    refused("comma", ",", "0:1: unexpected ,: expected label name"),
    refused("comma in braces", "{,}", "1:2: unexpected ,: expected label name"),
    refused("open brace", "{", "0:1: end of input: expected close brace"),
    refused("close brace", "}", "0:1: }: expected opening brace"),
    refused("no open brace", "foo=bar}", "0:8: }: expected opening brace"),
    refused("no close brace", "{foo=bar", "0:8: end of input: expected close brace"),
    refused(
        "invalid input after operator and before quotes",
        '{foo=:"bar"}',
        '6:11: unexpected "bar": expected a comma or close brace',
    ),
    refused("invalid escape sequence", r'{foo="bar\w"}', r'5:12: "bar\w": invalid input'),
    refused(
        "invalid escape sequence regex digits", r'{"foo"=~"\d+"}', r'8:13: "\d+": invalid input'
    ),
    refused(
        "no unquoted escape sequences",
        r"{foo=bar\n}",
        r"8:9: \: invalid input: expected a comma or close brace",
    ),
    refused("invalid unicode", r'{"foo"="\xf0\x9f"}', r'7:17: "\xf0\x9f": invalid input'),
]

# matcher/parse/parse_test.go, TestMatcher: the UTF-8 parser, exactly one matcher.
UTF8_MATCHER = [
    ok("equals", "{foo=bar}", ("foo", EQ, "bar")),
    ok("equals with trailing comma", "{foo=bar,}", ("foo", EQ, "bar")),
    ok("not equals", "{foo!=bar}", ("foo", NE, "bar")),
    ok("match regex", "{foo=~[a-z]+}", ("foo", RE, "[a-z]+")),
    ok("doesn't match regex", "{foo!~[a-z]+}", ("foo", NRE, "[a-z]+")),
    ok("equals unicode emoji", "{foo=🙂}", ("foo", EQ, "🙂")),
    ok(
        "equals unicode emoji as bytes in quotes",
        r'{"foo"="\xf0\x9f\x99\x82"}',
        ("foo", EQ, "🙂"),
    ),
    ok("equals unicode emoji as code points in quotes", r'{"foo"="\U0001f642"}', ("foo", EQ, "🙂")),
    ok("equals unicode sentence", "{foo=🙂bar}", ("foo", EQ, "🙂bar")),
    ok("equals without braces", "foo=bar", ("foo", EQ, "bar")),
    ok("equals without braces but with trailing comma", "foo=bar,", ("foo", EQ, "bar")),
    ok("not equals without braces", "foo!=bar", ("foo", NE, "bar")),
    ok("match regex without braces", "foo=~[a-z]+", ("foo", RE, "[a-z]+")),
    ok("doesn't match regex without braces", "foo!~[a-z]+", ("foo", NRE, "[a-z]+")),
    ok("equals in quotes", '{"foo"="bar"}', ("foo", EQ, "bar")),
    ok("equals in quotes and with trailing comma", '{"foo"="bar",}', ("foo", EQ, "bar")),
    ok("not equals in quotes", '{"foo"!="bar"}', ("foo", NE, "bar")),
    ok("match regex in quotes", '{"foo"=~"[a-z]+"}', ("foo", RE, "[a-z]+")),
    ok("doesn't match regex in quotes", '{"foo"!~"[a-z]+"}', ("foo", NRE, "[a-z]+")),
    ok("equals unicode emoji in quotes", '{"foo"="🙂"}', ("foo", EQ, "🙂")),
    ok("equals unicode sentence in quotes", '{"foo"="🙂bar"}', ("foo", EQ, "🙂bar")),
    ok("equals with newline in quotes", r'{"foo"="bar\n"}', ("foo", EQ, "bar\n")),
    ok("equals with tab in quotes", r'{"foo"="bar\t"}', ("foo", EQ, "bar\t")),
    ok("equals with escaped quotes in quotes", r'{"foo"="\"bar\""}', ("foo", EQ, '"bar"')),
    ok("equals with escaped backslash in quotes", r'{"foo"="bar\\"}', ("foo", EQ, "bar\\")),
    ok("equals without braces in quotes", '"foo"="bar"', ("foo", EQ, "bar")),
    ok(
        "equals without braces in quotes with trailing comma",
        '"foo"="bar",',
        ("foo", EQ, "bar"),
    ),
    refused("no input", "", "no matchers"),
    refused("open and closing braces", "{}", "no matchers"),
    refused("two or more returns error", "foo=bar,bar=baz", "expected 1 matcher, found 2"),
    refused("invalid unicode", r'foo="\xf0\x9f"', r'4:14: "\xf0\x9f": invalid input'),
]

# matcher/compat/parse_test.go, TestFallbackMatcherParser: the default mode, one matcher.
FALLBACK_MATCHER = [
    ok("input is accepted", "foo=bar", ("foo", EQ, "bar")),
    refused("input is accepted in neither", "foo!bar", "bad matcher format: foo!bar"),
    ok("input is accepted in matchers/parse but not pkg/labels", "foo🙂=bar", ("foo🙂", EQ, "bar")),
    ok(
        "input is accepted in pkg/labels but not matchers/parse",
        r"foo=!bar\n",
        ("foo", EQ, "!bar\n"),
    ),
    # \xf0\x9f\x99\x82 is 🙂 to the UTF-8 parser and four literal escapes to
    # the classic one; where they disagree, the classic reading wins.
    ok("input causes disagreement", r'foo="\xf0\x9f\x99\x82"', ("foo", EQ, r"\xf0\x9f\x99\x82")),
]

# matcher/compat/parse_test.go, TestFallbackMatchersParser: the default mode,
# zero or more matchers. This is how the bridge reads `matchers:` and `silent:`.
FALLBACK_MATCHERS = [
    ok("input is accepted", "{foo=bar,bar=baz}", ("foo", EQ, "bar"), ("bar", EQ, "baz")),
    refused("input is accepted in neither", "{foo!bar}", "bad matcher format: foo!bar"),
    ok(
        "input is accepted in matchers/parse but not pkg/labels",
        "{foo🙂=bar,bar=baz🙂}",
        ("foo🙂", EQ, "bar"),
        ("bar", EQ, "baz🙂"),
    ),
    ok(
        "is accepted in pkg/labels but not matchers/parse",
        r"{foo=!bar,bar=$baz\n}",
        ("foo", EQ, "!bar"),
        ("bar", EQ, "$baz\n"),
    ),
    ok(
        "input causes disagreement",
        r'{foo="\xf0\x9f\x99\x82"}',
        ("foo", EQ, r"\xf0\x9f\x99\x82"),
    ),
]

QUOTE = '{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}'

# pkg/labels/parse_test.go, TestMatchers: the classic parser. Go names these
# cases by their input, and so do the ids here.
CLASSIC = [
    ok("{}", "{}"),
    refused(",", ",", "bad matcher format: "),
    refused("{,}", "{,}", "bad matcher format: "),
    ok("{foo='}", "{foo='}", ("foo", EQ, "'")),
    ok("{foo=`}", "{foo=`}", ("foo", EQ, "`")),
    ok(r"{foo=\"}", r"{foo=\"}", ("foo", EQ, '"')),
    ok("{foo=bar}", "{foo=bar}", ("foo", EQ, "bar")),
    ok('{foo="bar"}', '{foo="bar"}', ("foo", EQ, "bar")),
    ok("{foo=~bar.*}", "{foo=~bar.*}", ("foo", RE, "bar.*")),
    ok('{foo=~"bar.*"}', '{foo=~"bar.*"}', ("foo", RE, "bar.*")),
    ok("{foo!=bar}", "{foo!=bar}", ("foo", NE, "bar")),
    ok('{foo!="bar"}', '{foo!="bar"}', ("foo", NE, "bar")),
    ok("{foo!~bar.*}", "{foo!~bar.*}", ("foo", NRE, "bar.*")),
    ok('{foo!~"bar.*"}', '{foo!~"bar.*"}', ("foo", NRE, "bar.*")),
    ok(
        '{foo="bar", baz!="quux"}',
        '{foo="bar", baz!="quux"}',
        ("foo", EQ, "bar"),
        ("baz", NE, "quux"),
    ),
    ok(
        '{foo="bar", baz!~"quux.*"}',
        '{foo="bar", baz!~"quux.*"}',
        ("foo", EQ, "bar"),
        ("baz", NRE, "quux.*"),
    ),
    ok(
        '{foo="bar",baz!~".*quux", derp="wat"}',
        '{foo="bar",baz!~".*quux", derp="wat"}',
        ("foo", EQ, "bar"),
        ("baz", NRE, ".*quux"),
        ("derp", EQ, "wat"),
    ),
    ok(
        '{foo="bar", baz!="quux", derp="wat"}',
        '{foo="bar", baz!="quux", derp="wat"}',
        ("foo", EQ, "bar"),
        ("baz", NE, "quux"),
        ("derp", EQ, "wat"),
    ),
    ok(
        '{foo="bar", baz!~".*quux.*", derp="wat"}',
        '{foo="bar", baz!~".*quux.*", derp="wat"}',
        ("foo", EQ, "bar"),
        ("baz", NRE, ".*quux.*"),
        ("derp", EQ, "wat"),
    ),
    ok(
        '{foo="bar", instance=~"some-api.*"}',
        '{foo="bar", instance=~"some-api.*"}',
        ("foo", EQ, "bar"),
        ("instance", RE, "some-api.*"),
    ),
    ok('{foo=""}', '{foo=""}', ("foo", EQ, "")),
    ok(
        '{foo="bar,quux", job="job1"}',
        '{foo="bar,quux", job="job1"}',
        ("foo", EQ, "bar,quux"),
        ("job", EQ, "job1"),
    ),
    ok(
        '{foo = "bar", dings != "bums", }',
        '{foo = "bar", dings != "bums", }',
        ("foo", EQ, "bar"),
        ("dings", NE, "bums"),
    ),
    ok("foo=bar,dings!=bums", "foo=bar,dings!=bums", ("foo", EQ, "bar"), ("dings", NE, "bums")),
    ok(QUOTE, QUOTE, ("quote", EQ, 'She said: "Hi, ladies! That\'s gender-neutral…"')),
    ok('statuscode=~"5.."', 'statuscode=~"5.."', ("statuscode", RE, "5..")),
    ok("tricky=~~~", "tricky=~~~", ("tricky", RE, "~~")),
    ok(r"trickier==\\=\=\"", r"trickier==\\=\=\"", ("trickier", EQ, r"=\=\=" + '"')),
    ok(
        r'contains_quote != "\"" , contains_comma !~ "foo,bar" , ',
        r'contains_quote != "\"" , contains_comma !~ "foo,bar" , ',
        ("contains_quote", NE, '"'),
        ("contains_comma", NRE, "foo,bar"),
    ),
    ok("{foo=bar}}", "{foo=bar}}", ("foo", EQ, "bar}")),
    ok("{foo=bar}},}", "{foo=bar}},}", ("foo", EQ, "bar}}")),
    ok("{foo=,bar=}}", "{foo=,bar=}}", ("foo", EQ, ""), ("bar", EQ, "}")),
    ok(r"{foo=bar\t}", r"{foo=bar\t}", ("foo", EQ, r"bar\t")),
    ok(r"{foo=bar\n}", r"{foo=bar\n}", ("foo", EQ, "bar\n")),
    ok("{foo=bar\\}", "{foo=bar\\}", ("foo", EQ, "bar\\")),
    ok(r"{foo=bar\\}", r"{foo=bar\\}", ("foo", EQ, "bar\\")),
    ok(r"{foo=bar\"}", r"{foo=bar\"}", ("foo", EQ, 'bar"')),
    ok("job=", "job=", ("job", EQ, "")),
    refused('job="value', 'job="value', 'matcher value contains unescaped double quote: "value'),
    refused('job=value"', 'job=value"', 'matcher value contains unescaped double quote: value"'),
    refused(
        r'trickier==\\=\=\""',
        r'trickier==\\=\=\""',
        r'matcher value contains unescaped double quote: =\\=\=\""',
    ),
    refused(
        'contains_unescaped_quote = foo"bar',
        'contains_unescaped_quote = foo"bar',
        'matcher value contains unescaped double quote: foo"bar',
    ),
    refused(
        '{invalid-name = "valid label"}',
        '{invalid-name = "valid label"}',
        'bad matcher format: invalid-name = "valid label"',
    ),
    refused(
        '{foo=~"invalid[regexp"}',
        '{foo=~"invalid[regexp"}',
        "error parsing regexp: missing closing ]: `[regexp)$`",
        differs=REGEX_WORDING,
    ),
    # Double escaped strings.
    refused(r'"{foo=\"bar"}', r'"{foo=\"bar"}', r'bad matcher format: "{foo=\"bar"'),
    refused(r'"foo=\"bar"', r'"foo=\"bar"', r'bad matcher format: "foo=\"bar"'),
    refused(r'"foo=\"bar\""', r'"foo=\"bar\""', r'bad matcher format: "foo=\"bar\""'),
    refused(r'"foo=\"bar\"', r'"foo=\"bar\"', r'bad matcher format: "foo=\"bar\"'),
    refused(r'"{foo=\"bar\"}"', r'"{foo=\"bar\"}"', r'bad matcher format: "{foo=\"bar\"}"'),
    refused('"foo="bar""', '"foo="bar""', 'bad matcher format: "foo="bar""'),
    refused("{{foo=", "{{foo=", "bad matcher format: {foo="),
    ok("{foo=", "{foo=", ("foo", EQ, "")),
    ok("{foo=}b", "{foo=}b", ("foo", EQ, "}b")),
]


@pytest.mark.parametrize("row", params(UTF8_MATCHERS))
def test_utf8_parser_matchers(row: Row) -> None:
    check(row, parse_utf8_matchers)


@pytest.mark.parametrize("row", params(UTF8_MATCHER))
def test_utf8_parser_matcher(row: Row) -> None:
    check(row, parse_utf8_matcher)


@pytest.mark.parametrize("row", params(FALLBACK_MATCHER))
def test_fallback_parser_matcher(row: Row) -> None:
    check(row, parse_matcher)


@pytest.mark.parametrize("row", params(FALLBACK_MATCHERS))
def test_fallback_parser_matchers(row: Row) -> None:
    check(row, parse_matchers)


@pytest.mark.parametrize("row", params(CLASSIC))
def test_classic_parser_matchers(row: Row) -> None:
    check(row, parse_classic_matchers)


# pkg/labels/matcher_test.go, TestMatcher: what a matcher matches. Go's cases
# have no names; the id is the matcher and the value.
MATCHES = [
    (EQ, "bar", "bar", True),
    (EQ, "bar", "foo-bar", False),
    (NE, "bar", "bar", False),
    (NE, "bar", "foo-bar", True),
    (RE, "bar", "bar", True),
    (RE, "bar", "foo-bar", False),
    (RE, ".*bar", "foo-bar", True),
    (NRE, "bar", "bar", False),
    (NRE, "bar", "foo-bar", True),
    (NRE, ".*bar", "foo-bar", False),
    (RE, "foo.bar", "foo-bar", True),
    (RE, r"foo\.bar", "foo-bar", False),
    (RE, r"foo\.bar", "foo.bar", True),
    (EQ, "foo\nbar", "foo\nbar", True),
    (RE, "foo.bar", "foo\nbar", False),
    (RE, "(?s)foo.bar", "foo\nbar", True),
    (EQ, '~!="', '~!="', True),
]


@pytest.mark.parametrize(
    ("op", "value", "label", "expected"),
    MATCHES,
    ids=[f"{op.value}{value!r} on {label!r}" for op, value, label, _ in MATCHES],
)
def test_matches(op: Op, value: str, label: str, expected: bool) -> None:
    assert make_matcher("", op, value).matches_value(label) is expected


# pkg/labels/matcher_test.go, TestMatcherString: the canonical form that
# check-config prints.
STRINGS = [
    ("foo", EQ, "bar", 'foo="bar"'),
    ("foo", NE, "bar", 'foo!="bar"'),
    ("foo", RE, "bar", 'foo=~"bar"'),
    ("foo", NRE, "bar", 'foo!~"bar"'),
    ("foo", EQ, "back\\slash", r'foo="back\\slash"'),
    ("foo", EQ, 'double"quote', r'foo="double\"quote"'),
    ("foo", EQ, "new\nline", r'foo="new\nline"'),
    ("foo", EQ, "tab\tstop", 'foo="tab\tstop"'),
]


@pytest.mark.parametrize(
    ("name", "op", "value", "expected"), STRINGS, ids=[want for *_, want in STRINGS]
)
def test_matcher_string(name: str, op: Op, value: str, expected: str) -> None:
    assert str(make_matcher(name, op, value)) == expected


def test_every_row_is_here() -> None:
    # A guard against a row lost in an edit: the counts of the Go tables.
    counts = [len(t) for t in (UTF8_MATCHERS, UTF8_MATCHER, FALLBACK_MATCHER, FALLBACK_MATCHERS)]
    assert counts == [45, 31, 5, 5]
    assert [len(CLASSIC), len(MATCHES), len(STRINGS)] == [53, 17, 8]
    assert all(isinstance(m, Matcher) for m in parse_matchers("a=b,c=d"))
