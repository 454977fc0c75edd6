"""Rendering: notifications become Telegram HTML that is escaped, valid and fits.

Every message the bridge renders must be accepted by Telegram's HTML parse
mode and show at most 4096 UTF-16 code units; a template that is broken is
reported with its name and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import SandboxedEnvironment

from bridge.errors import ConfigError, TemplateError
from bridge.models import Alert, Destination, Notification, Status
from bridge.render import BUILTIN_TEMPLATES, build_environment, render, silence_url
from bridge.sandbox.botapi import parse_telegram_html
from bridge.telegram_text import (
    TELEGRAM_LIMIT,
    TELEGRAM_SOURCE_LIMIT,
    html_to_plain,
    telegram_length,
    utf16_len,
    visible_text,
)
from bridge.timefmt import duration

NOW = datetime(2026, 11, 20, 11, 5, tzinfo=UTC)
STARTED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
DEST = Destination(chat_id=-100123)


# ---------------------------------------------------- what Telegram accepts


def check_telegram_html(html: str) -> str:
    """The visible text, or EntityParseError where Telegram would refuse ``html``.

    The Telegram double's parser is the one judge of what Telegram accepts,
    so these tests and the integration tests cannot disagree.
    """
    shown, _entities = parse_telegram_html(html)
    return shown


def assert_sendable(html: str) -> str:
    """Valid Telegram HTML within the limit; returns the visible text."""
    shown = check_telegram_html(html)
    assert shown == visible_text(html)
    assert shown.strip(), "Telegram refuses an empty message"
    assert telegram_length(shown) <= TELEGRAM_LIMIT
    assert len(html.encode("utf-8")) <= TELEGRAM_SOURCE_LIMIT  # the Bot API's own limit
    return shown


# -------------------------------------------------------------------- builders


def make_alert(
    name: str = "HighErrorRate",
    *,
    status: Status = Status.FIRING,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    index: int = 0,
) -> Alert:
    return Alert(
        fingerprint=f"{index:016x}",
        status=status,
        labels={
            "alertname": name,
            "severity": "critical",
            "instance": f"host-{index}",
            **(labels or {}),
        },
        annotations=dict(annotations)
        if annotations is not None
        else {"summary": f"{name} on host-{index}"},
        starts_at=STARTED,
        ends_at=STARTED + timedelta(minutes=42) if status == Status.RESOLVED else None,
        generator_url=f"http://prometheus:9090/graph?g0.expr=up&g0.tab={index}",
    )


def make_notification(*alerts: Alert, truncated: int = 0) -> Notification:
    shared = [set(a.labels.items()) for a in alerts]
    common = dict(set.intersection(*shared)) if shared else {}
    shared_annotations = [set(a.annotations.items()) for a in alerts]
    common_annotations = dict(set.intersection(*shared_annotations)) if shared_annotations else {}
    statuses = {a.status for a in alerts}
    return Notification(
        source="alertmanager",
        receiver="telegram",
        group_key='{}:{alertname="HighErrorRate"}',
        status=Status.FIRING if Status.FIRING in statuses else Status.RESOLVED,
        alerts=tuple(alerts),
        group_labels={k: v for k, v in common.items() if k == "alertname"},
        common_labels=common,
        common_annotations=common_annotations,
        external_url="http://alertmanager:9093",
        truncated_alerts=truncated,
    )


@pytest.fixture(scope="module")
def env() -> SandboxedEnvironment:
    return build_environment()


def render_default(env: SandboxedEnvironment, notification: Notification) -> str:
    return render(env, "default", notification, DEST, now=NOW)


def write_template(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.html.j2"
    path.write_text(source, encoding="utf-8")
    return path


# ---------------------------------------------------------------- text helpers


def test_utf16_len_counts_the_units_of_entity_offsets() -> None:
    assert utf16_len("") == 0
    assert utf16_len("abc") == 3
    assert utf16_len("é") == 1
    assert utf16_len("中文字") == 3  # CJK is in the BMP: one unit each
    assert utf16_len("😀") == 2  # outside the BMP: a surrogate pair
    assert utf16_len("🔥✅") == 3  # 🔥 is astral, ✅ is not
    assert utf16_len("👨‍👩‍👧") == 8  # three astral emoji joined by two ZWJs
    assert utf16_len("𠀀") == 2  # CJK extension B is astral


def test_visible_text_drops_tags_and_decodes_telegram_entities() -> None:
    html = (
        '<b>a &lt; b</b> &amp;amp; <a href="https://x/?q=&quot;&gt;">l&#39;ink</a>'
        " &#128512;&#x4e2d;"
    )
    assert visible_text(html) == "a < b &amp; l'ink 😀中"


def test_visible_text_leaves_unknown_entities_and_stray_ampersands_alone() -> None:
    assert visible_text("&copy; & &#xZZ; &#0;") == "&copy; & &#xZZ; &#0;"


def test_html_to_plain_is_the_visible_text_and_never_over_the_limit() -> None:
    assert html_to_plain("<b>x &amp; y</b>\n<i>z</i>") == "x & y\nz"
    huge = "<b>" + "😀" * 5000 + "</b>"
    plain = html_to_plain(huge)
    assert telegram_length(plain) <= TELEGRAM_LIMIT
    assert plain.endswith("…")


def test_duration_is_the_two_largest_units() -> None:
    assert duration(3900) == "1h 5m"
    assert duration(timedelta(hours=1, minutes=5)) == "1h 5m"
    assert duration(3600) == "1h"
    assert duration(59.9) == "59s"
    assert duration(timedelta(days=2, hours=3, minutes=4)) == "2d 3h"
    assert duration(125) == "2m 5s"
    assert duration(-5) == "0s"


# ------------------------------------------------------------------- filters


def test_filters_are_available_to_templates(env: SandboxedEnvironment) -> None:
    template = env.from_string(
        "{{ 3900 | duration }}|{{ started | since }}|{{ started | datetime }}"
        "|{{ berlin | datetime('%H:%M') }}|{{ 'abcdef' | truncate_text(4) }}"
        "|{{ labels | exclude_labels('a', ['b']) | dictsort }}"
        "|{{ labels | only_labels('c', 'a', 'zz') }}|{{ quote | e }}"
    )
    berlin = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    out = template.render(
        now=NOW,
        started=STARTED,
        berlin=berlin,
        labels={"a": "1", "b": "2", "c": "3"},
        quote='it\'s "x"',
    )
    assert out == (
        "1h 5m|1h 5m|2026-11-20 10:00:00 UTC|11:00|abc…"
        "|[('c', '3')]|{'c': '3', 'a': '1'}|it&#39;s &#34;x&#34;"
    )
    # markupsafe's |e writes ' and " as &#39; and &#34;: numeric entities Telegram accepts.
    assert check_telegram_html(out).endswith("{'c': '3', 'a': '1'}|it's \"x\"")


def test_autoescape_writes_exactly_telegrams_entities(env: SandboxedEnvironment) -> None:
    out = env.from_string("{{ v }}").render(v="<b> & \"q\" 'a'")
    assert out == "&lt;b&gt; &amp; &quot;q&quot; 'a'"


def test_truncate_text_never_cuts_an_entity(env: SandboxedEnvironment) -> None:
    out = env.from_string("{{ ('<&>' * 10) | e | truncate_text(5) }}").render()
    assert out == "&lt;&amp;&gt;&lt;…"
    check_telegram_html(out)


# ------------------------------------------------------------ default template


def test_default_template_shows_the_essentials(env: SandboxedEnvironment) -> None:
    alerts = [make_alert(index=i) for i in range(3)]
    html = render_default(env, make_notification(*alerts))
    shown = assert_sendable(html)
    assert shown.startswith("🔥 [FIRING:3] HighErrorRate · CRITICAL")
    assert "<b>[FIRING:3] HighErrorRate</b>" in html
    for i in range(3):
        assert f"HighErrorRate on host-{i}" in shown
        assert f"instance=host-{i}" in shown
        assert f'href="http://prometheus:9090/graph?g0.expr=up&amp;g0.tab={i}"' in html
    assert "Since 2026-11-20 10:00 UTC (1h 5m)" in shown
    assert "more alert" not in shown


def test_resolved_notifications_say_so(env: SandboxedEnvironment) -> None:
    html = render_default(env, make_notification(make_alert(status=Status.RESOLVED)))
    shown = assert_sendable(html)
    assert shown.startswith("✅ [RESOLVED] HighErrorRate")
    assert "Resolved after 42m" in shown


def test_without_a_common_alertname_the_title_counts_alerts(env: SandboxedEnvironment) -> None:
    html = render_default(env, make_notification(make_alert("A"), make_alert("B", index=1)))
    shown = assert_sendable(html)
    assert shown.startswith("🔥 [FIRING:2] 2 alerts")
    assert "A: A on host-0" in shown and "B: B on host-1" in shown


def test_label_values_arrive_escaped_and_are_never_evaluated(env: SandboxedEnvironment) -> None:
    nasty = {"job": "<b>bold</b>", "team": "a & b", "path": '"quoted"', "tpl": "{{ 7 * 7 }}"}
    alert = make_alert(labels=nasty, annotations={"summary": "{% if 1 %}x{% endif %} <i>&amp;"})
    html = render_default(env, make_notification(alert))
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "a &amp; b" in html
    assert "&quot;quoted&quot;" in html
    assert "{{ 7 * 7 }}" in html and "49" not in html
    shown = assert_sendable(html)
    for value in [*nasty.values(), "{% if 1 %}x{% endif %} <i>&amp;"]:
        assert value in shown


def test_links_only_take_http_urls_and_escape_their_href(env: SandboxedEnvironment) -> None:
    sneaky = replace(make_alert(), generator_url='https://x/"><b>?a=1&b=2')
    evil = replace(make_alert(index=1), generator_url="javascript:alert(1)")
    html = render_default(env, make_notification(sneaky, evil))
    assert '<a href="https://x/&quot;&gt;&lt;b&gt;?a=1&amp;b=2">' in html
    assert "javascript" not in html
    assert_sendable(html)


# ------------------------------------------------------------------- the limit


def test_three_hundred_long_alerts_are_cut_to_fit_with_a_count(env: SandboxedEnvironment) -> None:
    alerts = [
        make_alert(index=i, annotations={"summary": f"alert number {i}", "description": "x" * 600})
        for i in range(300)
    ]
    html = render_default(env, make_notification(*alerts))
    shown = assert_sendable(html)
    match = re.search(r"… and (\d+) more alerts", shown)
    assert match, shown[-200:]
    omitted = int(match.group(1))
    shown_numbers = [int(n) for n in re.findall(r"alert number (\d+)", shown)]
    # The first alerts, in order, and the count adds up.
    assert shown_numbers == list(range(len(shown_numbers)))
    assert len(shown_numbers) + omitted == 300
    assert len(shown_numbers) >= 3
    # As many as fit: one more would not have.
    assert telegram_length(shown) + 600 > TELEGRAM_LIMIT


def test_truncated_alerts_from_the_payload_count_as_omitted(env: SandboxedEnvironment) -> None:
    html = render_default(env, make_notification(make_alert(), truncated=7))
    assert "… and 7 more alerts" in assert_sendable(html)


def test_a_5000_character_annotation_is_truncated(env: SandboxedEnvironment) -> None:
    alert = make_alert(annotations={"summary": "s", "description": "d" * 5000})
    shown = assert_sendable(render_default(env, make_notification(alert)))
    assert "d" * 900 in shown
    assert "d" * 1000 not in shown
    assert "…" in shown


def test_an_alert_whose_label_is_2000_emoji(env: SandboxedEnvironment) -> None:
    alert = make_alert(labels={"emoji": "😀" * 2000})
    shown = assert_sendable(render_default(env, make_notification(alert, make_alert(index=1))))
    assert "😀" * 100 in shown


def test_an_alert_with_2000_emoji_labels(env: SandboxedEnvironment) -> None:
    labels = {chr(0x1F300 + i) * 3: chr(0x1F300 + i) * 50 for i in range(2000)}
    html = render_default(env, make_notification(make_alert(labels=labels)))
    shown = assert_sendable(html)
    # Its silence link alone (every label a matcher) is over the Bot API's 32 KiB
    # of text, though little of it is visible: the minimal message it is.
    assert "The full message is too long for Telegram" in shown


def test_a_message_that_cannot_fit_falls_back_to_a_minimal_one(tmp_path: Path) -> None:
    write_template(
        tmp_path, "verbose", "{% for k, v in common_labels.items() %}{{ v }}{% endfor %}"
    )
    env = build_environment([tmp_path])
    notification = make_notification(make_alert(labels={"blob": "<&>" * 3000}))
    html = render(env, "verbose", notification, DEST, now=NOW)
    shown = assert_sendable(html)
    assert "HighErrorRate" in shown and "firing" in shown and "1 alert" in shown


def test_a_smaller_limit_is_honoured(env: SandboxedEnvironment) -> None:
    alerts = [make_alert(index=i) for i in range(50)]
    for limit in (50, 300, 1000):
        html = render(env, "default", make_notification(*alerts), DEST, now=NOW, limit=limit)
        check_telegram_html(html)
        assert telegram_length(visible_text(html)) <= limit


# -------------------------------------------------------------------- errors


def test_an_undefined_variable_names_the_template_and_line(tmp_path: Path) -> None:
    write_template(tmp_path, "broken", "first line\n{{ nope.x }}\n")
    env = build_environment([tmp_path])
    with pytest.raises(TemplateError) as caught:
        render(env, "broken", make_notification(make_alert()), DEST, now=NOW)
    message = str(caught.value)
    assert "template 'broken' line 2" in message
    assert "'nope' is undefined" in message
    assert "Fix the template or point the route at another one." in message


def test_a_missing_attribute_is_an_error_too(tmp_path: Path) -> None:
    write_template(tmp_path, "typo", "{{ common_labels.alertname }}\n\n{{ notification.nope }}")
    env = build_environment([tmp_path])
    with pytest.raises(TemplateError, match=r"template 'typo' line 3: .*nope"):
        render(env, "typo", make_notification(make_alert()), DEST, now=NOW)


def test_a_syntax_error_names_the_template_and_line(tmp_path: Path) -> None:
    write_template(tmp_path, "syntax", "ok\nok\n{% if %}\n")
    env = build_environment([tmp_path])
    with pytest.raises(TemplateError, match=r"template 'syntax' line 3: .*Fix the template"):
        render(env, "syntax", make_notification(make_alert()), DEST, now=NOW)


def test_an_error_in_an_included_template_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "part.j2").write_text("\n\n{{ 1 // 0 }}")
    write_template(tmp_path, "outer", "{% include 'part.j2' %}")
    env = build_environment([tmp_path])
    with pytest.raises(TemplateError, match=r"template 'outer' \(in 'part.j2'\) line 3: Zero"):
        render(env, "outer", make_notification(make_alert()), DEST, now=NOW)


def test_the_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    write_template(tmp_path, "escape", "{{ notification.__class__.__mro__ }}")
    env = build_environment([tmp_path])
    with pytest.raises(TemplateError, match="template 'escape' line 1"):
        render(env, "escape", make_notification(make_alert()), DEST, now=NOW)


def test_a_missing_template_says_where_it_looked(env: SandboxedEnvironment) -> None:
    with pytest.raises(TemplateError, match=r"'nosuch'.*nosuch\.html\.j2 not found"):
        render(env, "nosuch", make_notification(make_alert()), DEST, now=NOW)


def test_an_empty_message_is_a_template_error(tmp_path: Path) -> None:
    write_template(tmp_path, "empty", "{% if false %}x{% endif %}<b> </b>\n")
    env = build_environment([tmp_path])
    with pytest.raises(TemplateError, match="empty message"):
        render(env, "empty", make_notification(make_alert()), DEST, now=NOW)


def test_a_template_dir_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        build_environment([tmp_path / "missing"])


# ------------------------------------------------------------------ the loader


def test_operator_templates_come_first_then_the_builtin_ones(tmp_path: Path) -> None:
    write_template(tmp_path, "default", "mine: {{ status }} {{ destination.chat_id }}")
    write_template(tmp_path, "team", "{{ alerts | length }} / {{ omitted }}")
    env = build_environment([tmp_path])
    notification = make_notification(make_alert())
    assert render(env, "default", notification, DEST, now=NOW) == "mine: firing -100123"
    assert render(env, "team", notification, DEST, now=NOW) == "1 / 0"
    assert (BUILTIN_TEMPLATES / "default.html.j2").is_file()
    assert "HighErrorRate" in render(build_environment(), "default", notification, DEST, now=NOW)


def test_the_context_templates_see(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "ctx",
        "{{ status }}|{{ firing | length }}|{{ resolved | length }}|{{ group_labels.alertname }}"
        "|{{ common_labels.severity }}|{{ common_annotations | length }}|{{ external_url }}"
        "|{{ now | datetime }}|{{ total }}|{{ omitted }}|{{ notification.receiver }}",
    )
    env = build_environment([tmp_path])
    notification = make_notification(
        make_alert(), make_alert(status=Status.RESOLVED, index=1), truncated=2
    )
    assert render(env, "ctx", notification, DEST, now=NOW) == (
        "firing|1|1|HighErrorRate|critical|0|http://alertmanager:9093"
        "|2026-11-20 11:05:00 UTC|4|2|telegram"
    )


# ----------------------------------------------------------------- properties

NASTY = st.sampled_from(
    ["<", ">", "&", '"', "'", "{{", "}}", "{%", "&amp;", "</b>", "<a>", "😀", "\n"]
)
TEXT = st.lists(st.one_of(st.text(max_size=20), NASTY), max_size=12).map("".join)
# Long text is cheap to generate as a short piece repeated: 5 to 6,000 characters.
LONG = st.builds(lambda piece, times: (piece or "<&😀") * times, TEXT, st.integers(5, 500))
LABEL_NAMES = st.one_of(
    st.sampled_from(["alertname", "severity", "instance", "job"]), st.text(max_size=12)
)
ANNOTATION_NAMES = st.sampled_from(["summary", "description", "runbook_url", "other"])


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    return Alert(
        fingerprint=draw(st.text(max_size=8)),
        status=draw(st.sampled_from(Status)),
        labels=draw(st.dictionaries(LABEL_NAMES, st.one_of(TEXT, LONG), max_size=6)),
        annotations=draw(st.dictionaries(ANNOTATION_NAMES, st.one_of(TEXT, LONG))),
        starts_at=draw(st.none() | st.datetimes(timezones=st.just(UTC))),
        ends_at=draw(st.none() | st.datetimes(timezones=st.just(UTC))),
        generator_url=draw(st.one_of(TEXT, TEXT.map(lambda t: "https://" + t))),
    )


@pytest.mark.parametrize("template", ["default", "compact", "detailed"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alert_list=st.lists(alerts(), min_size=1, max_size=20),
    common=st.dictionaries(LABEL_NAMES, TEXT, max_size=5),
    common_annotations=st.dictionaries(ANNOTATION_NAMES, TEXT, max_size=3),
    truncated=st.integers(0, 1000),
    external_url=TEXT,
)
def test_any_notification_renders_to_sendable_html(
    template: str,
    alert_list: list[Alert],
    common: dict[str, str],
    common_annotations: dict[str, str],
    truncated: int,
    external_url: str,
) -> None:
    notification = Notification(
        source="alertmanager",
        receiver="r",
        group_key="g",
        status=alert_list[0].status,
        alerts=tuple(alert_list),
        group_labels=common,
        common_labels=common,
        common_annotations=common_annotations,
        external_url=external_url,
        truncated_alerts=truncated,
    )
    html = render(build_environment(), template, notification, DEST, now=NOW)
    shown = assert_sendable(html)
    assert html_to_plain(html) == visible_text(html).strip()
    event("cut to fit" if "more" in shown else "whole")


def test_the_cut_keeps_as_many_leading_alerts_as_fit(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "lines",
        "{% for a in alerts %}{{ a.fingerprint[-9:] }}\n{% endfor %}+{{ omitted }}",
    )
    env = build_environment([tmp_path])
    notification = make_notification(*(make_alert(index=i) for i in range(50)))

    def lines_for(k: int) -> str:
        return "".join(a.fingerprint[-9:] + "\n" for a in notification.alerts[:k]) + f"+{50 - k}"

    for limit in (5, 12, 13, 57, 100, 333, 499, 500, 501, 4096):
        expected = max(k for k in range(51) if len(lines_for(k)) <= limit or k == 0)
        html = render(env, "lines", notification, DEST, now=NOW, limit=limit)
        if len(lines_for(0)) > limit:
            assert "HighErrorRate" in html  # the minimal message
        else:
            assert html == lines_for(expected), limit
        assert telegram_length(visible_text(html)) <= limit


# ---------------------------------------------------- time zones and silences


def test_times_are_shown_in_the_configured_timezone() -> None:
    notification = make_notification(make_alert())
    berlin = render(
        build_environment(timezone="Europe/Berlin"), "default", notification, DEST, now=NOW
    )
    tokyo = render(build_environment(timezone="Asia/Tokyo"), "default", notification, DEST, now=NOW)
    assert "Since 2026-11-20 11:00 CET" in berlin  # STARTED is 10:00 UTC
    assert "Since 2026-11-20 19:00 JST" in tokyo
    env = build_environment(timezone="Asia/Tokyo")
    explicit = env.from_string("{{ t | datetime('%H:%M %Z', tz='UTC') }}").render(t=STARTED)
    assert explicit == "10:00 UTC"  # a template may still name its own zone


def test_the_silence_link_opens_the_senders_form_with_the_group_labels() -> None:
    labels = {"alertname": "Disk", "path": 'C:\\ "x"'}
    am = silence_url("alertmanager", "http://am:9093/", labels)
    assert am.startswith("http://am:9093/#/silences/new?filter=")
    assert unquote(am.split("filter=")[1]) == '{alertname="Disk",path="C:\\\\ \\"x\\""}'
    grafana = silence_url("grafana", "https://g.example/", labels)
    assert grafana.startswith("https://g.example/alerting/silence/new?alertmanager=grafana&")
    assert parse_qs(urlsplit(grafana).query)["matcher"] == ["alertname=Disk", 'path=C:\\ "x"']
    assert silence_url("uptime", "http://am:9093", labels) == ""
    assert silence_url("alertmanager", "javascript:alert(1)", labels) == ""
