"""Every source becomes the same Notification: Alertmanager's, Grafana's, any JSON by config."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bridge.config import GenericSourceConfig
from bridge.dedup import notification_key
from bridge.errors import PayloadError
from bridge.models import Destination, Status
from bridge.render import build_environment, render
from bridge.routing import build_route, resolve
from bridge.sources import alertmanager, generic, grafana
from bridge.telegram_text import visible_text

EXAMPLES = Path(__file__).resolve().parents[2] / "alertmanager-examples"
UPTIME = GenericSourceConfig.model_validate(
    yaml.safe_load((EXAMPLES / "generic-source.yml").read_text())["sources"]["uptime"]
)


def test_grafana_sample_parses() -> None:
    n = grafana.parse((EXAMPLES / "payloads/grafana-firing.json").read_bytes())
    assert n.source == "grafana" and n.status is Status.FIRING
    (alert,) = n.alerts
    assert alert.labels["team"] == "blue" and alert.fingerprint == "c6eadffa33fcdf37"
    assert "<node-7>" in alert.annotations["description"]


def test_grafana_rejects_an_alertmanager_payload_with_a_clear_reason() -> None:
    body = (EXAMPLES / "payloads/firing.json").read_bytes()
    with pytest.raises(PayloadError, match="version '4' is not supported"):
        grafana.parse(body)


def test_the_generic_sample_maps_every_field() -> None:
    body = (EXAMPLES / "payloads/generic-uptime.json").read_bytes()
    n = generic.parse(body, UPTIME, "uptime")
    assert n.source == n.receiver == "uptime"
    assert n.status is Status.FIRING
    assert n.group_key == '{}:{alertname="CheckoutHomepage", service="shop"}'
    first, second = n.alerts
    assert first.fingerprint == "chk-101" and second.fingerprint == "chk-102"
    assert first.labels == {"alertname": "CheckoutHomepage", "region": "eu-west", "service": "shop"}
    assert first.annotations["summary"].endswith("<Service Unavailable>")
    assert first.starts_at is not None and first.starts_at.year == 2026
    assert first.generator_url == "https://status.example/checks/101"
    assert n.common_labels == {"alertname": "CheckoutHomepage", "service": "shop"}


def test_a_value_outside_firing_values_is_resolved() -> None:
    body = b'{"state": "up", "name": "X"}'
    settings = GenericSourceConfig(
        status="state", firing_values=["down"], labels={"alertname": "name"}
    )
    n = generic.parse(body, settings, "ping")
    assert n.status is Status.RESOLVED and n.alerts[0].status is Status.RESOLVED


def test_without_an_alertname_the_source_name_is_used() -> None:
    n = generic.parse(b'{"status": "firing"}', GenericSourceConfig(), "cron")
    assert n.alerts[0].labels == {"alertname": "cron"}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "not valid JSON"),
        (b'{"checks": []}', 422, "checks: expected a non-empty list"),
        (b'{"checks": [{"name": "x"}]}', 422, "checks[0].state: missing"),
        (b'{"checks": [7]}', 422, "checks[0]: expected a JSON object"),
        (b'{"checks": [{"state": "down", "since": "yesterday", "id": 1}]}', 422, "RFC 3339"),
    ],
)
def test_bad_generic_bodies_name_the_path(body, status, says) -> None:
    with pytest.raises(PayloadError) as error:
        generic.parse(body, UPTIME, "uptime")
    assert error.value.status == status and says in str(error.value)


# --------------------------------------------------- generic: absent and null


def test_a_configured_url_the_alert_lacks_is_no_link() -> None:
    settings = GenericSourceConfig(url="link")
    missing = generic.parse(b'{"status": "firing"}', settings, "cron")
    null = generic.parse(b'{"status": "firing", "link": null}', settings, "cron")
    assert missing.alerts[0].generator_url == null.alerts[0].generator_url == ""


def test_a_body_nested_too_deeply_is_a_400() -> None:
    with pytest.raises(PayloadError) as error:
        generic.parse(b"[" * 100_000 + b"]" * 100_000, GenericSourceConfig(), "cron")
    assert error.value.status == 400


def test_a_time_without_offset_is_utc() -> None:
    settings = GenericSourceConfig(starts_at="since")
    n = generic.parse(b'{"status": "firing", "since": "2026-11-20T10:00:00"}', settings, "cron")
    assert n.alerts[0].starts_at == datetime(2026, 11, 20, 10, tzinfo=UTC)


# ------------------------------------------- text and times the store can keep


@pytest.mark.parametrize(
    ("parse", "body", "field"),
    [
        (alertmanager.parse, {"alerts": {0: {"labels": {"instance": "a\x00b"}}}}, "instance"),
        (alertmanager.parse, {"receiver": "tele\x00gram"}, "receiver"),
        (grafana.parse, {"commonAnnotations": {"summary": "\x00"}}, "commonAnnotations"),
        (
            alertmanager.parse,
            {"alerts": {0: {"startsAt": "9999-12-31T23:59:59-01:00"}}},
            "startsAt",
        ),
        (alertmanager.parse, {"truncatedAlerts": 2**63}, "truncatedAlerts"),
    ],
)
def test_what_no_store_can_keep_is_refused_by_field(parse, body, field) -> None:
    sample = "firing.json" if parse is alertmanager.parse else "grafana-firing.json"
    document = _merged(json.loads((EXAMPLES / "payloads" / sample).read_text()), body)
    with pytest.raises(PayloadError) as error:
        parse(json.dumps(document).encode())
    assert error.value.status == 422
    assert error.value.field is not None and field in error.value.field
    assert error.value.field in str(error.value)


def test_generic_text_the_store_cannot_keep_is_refused_by_field() -> None:
    settings = GenericSourceConfig(labels={"host": "host"})
    for body in (b'{"status": "firing", "host": "\\u0000"}', b'{"status": "\\ud800"}'):
        with pytest.raises(PayloadError) as error:
            generic.parse(body, settings, "cron")
        assert error.value.status == 422 and error.value.field in str(error.value)


def test_null_for_an_optional_field_means_not_sent() -> None:
    document = json.loads((EXAMPLES / "payloads/firing.json").read_text())
    document["commonAnnotations"] = None
    document["alerts"][0]["annotations"] = None
    document["alerts"][0]["generatorURL"] = None
    n = alertmanager.parse(json.dumps(document).encode())
    assert n.common_annotations == {} and n.alerts[0].annotations == {}
    assert n.alerts[0].generator_url == ""
    document["alerts"][0]["labels"] = None  # required: still refused, by name
    with pytest.raises(PayloadError, match=r"alerts\.0\.labels"):
        alertmanager.parse(json.dumps(document).encode())


def _merged(document, changes):
    for key, value in changes.items():
        if isinstance(value, dict):
            _merged(document[key], value)
        else:
            document[key] = value
    return document


# ------------------------------------------------------------------- Grafana


def test_grafanas_documented_example_payload() -> None:
    n = grafana.parse((EXAMPLES / "payloads/grafana-documented.json").read_bytes())
    assert n.receiver == "My Super Webhook" and n.status is Status.FIRING
    assert n.title == "[FIRING:2]  (blue)" and n.message.startswith("**Firing**")
    assert n.common_labels == {"team": "blue"} and n.group_key == "{}:{}"
    memory, cpu = n.alerts
    assert memory.fingerprint == "c6eadffa33fcdf37" and cpu.fingerprint == "bc97ff14869b13e3"
    assert memory.values == {"B": 44.23943737541908, "C": 1.0}
    assert memory.silence_url.startswith("https://play.grafana.org/alerting/silence/new?")
    assert memory.dashboard_url == memory.panel_url == memory.image_url == ""
    assert memory.starts_at == datetime(2021, 10, 12, 7, 51, 3, 157076, tzinfo=UTC)
    assert memory.ends_at is None


def test_grafanas_extras_are_carried() -> None:
    n = grafana.parse((EXAMPLES / "payloads/grafana-firing.json").read_bytes())
    (alert,) = n.alerts
    assert alert.value_string == "[ var='B' labels={} value=93.2 ]"
    assert alert.dashboard_url == "https://grafana.example/d/mem"
    assert alert.panel_url == "https://grafana.example/d/mem?viewPanel=2"
    assert "__alert_rule_uid__%3D1afz29v7z" in alert.silence_url


def test_grafanas_decorations_of_an_unexpected_type_do_not_lose_the_alert() -> None:
    document = json.loads((EXAMPLES / "payloads/grafana-firing.json").read_text())
    document["alerts"][0].update(values=None, valueString=7, imageURL=["x"], dashboardURL="\x00")
    document.update(title={"a": 1}, orgId="one", state=None)
    n = grafana.parse(json.dumps(document).encode())
    (alert,) = n.alerts
    assert alert.values == {} and alert.value_string == alert.image_url == ""
    assert alert.dashboard_url == "" and n.title == ""


INTERNAL = {
    "__alert_rule_uid__": "1afz29v7z",
    "__alert_rule_namespace_uid__": "f0",
    "__grafana_autogenerated__": "true",
}


def _with_internal_labels(document):
    document = copy.deepcopy(document)
    document["groupLabels"] |= INTERNAL
    document["commonLabels"] |= INTERNAL
    document["commonAnnotations"]["__dashboardUid__"] = "mem"
    for alert in document["alerts"]:
        alert["labels"] |= INTERNAL
        alert["annotations"]["__value_string__"] = "93.2"
    return document


@pytest.mark.parametrize(
    ("parse", "sample"),
    [(grafana.parse, "grafana-firing.json"), (alertmanager.parse, "firing.json")],
)
def test_internal_labels_are_hidden_and_change_neither_key_nor_route(parse, sample) -> None:
    plain = json.loads((EXAMPLES / "payloads" / sample).read_text())
    marked = parse(json.dumps(_with_internal_labels(plain)).encode())
    for labels in (
        marked.group_labels,
        marked.common_labels,
        marked.common_annotations,
        *(a.labels for a in marked.alerts),
        *(a.annotations for a in marked.alerts),
    ):
        assert not [name for name in labels if name.startswith("__")]
    unmarked = parse(json.dumps(plain).encode())
    assert notification_key(marked) == notification_key(unmarked)
    assert marked.common_labels == unmarked.common_labels
    route = build_route(
        {
            "chats": [1],
            "routes": [
                {"matchers": ['team="blue"'], "chats": [2]},
                {"matchers": ['severity="critical"', 'alertname=~".+"'], "chats": [3]},
            ],
        }
    )
    assert resolve(route, marked.common_labels) == resolve(route, unmarked.common_labels)
    env = build_environment()
    for template in ("default", "compact", "detailed"):
        # Grafana's own silence link may name the rule; what the reader sees does not.
        shown = visible_text(render(env, template, marked, Destination(chat_id=1)))
        assert "__alert_rule" not in shown and "__grafana" not in shown, template


def test_alerts_that_differ_only_in_internal_labels_stay_two_alerts() -> None:
    document = json.loads((EXAMPLES / "payloads/grafana-firing.json").read_text())
    first = document["alerts"][0]
    del first["fingerprint"]
    second = copy.deepcopy(first)
    first["labels"]["__alert_rule_uid__"] = "rule-a"
    second["labels"]["__alert_rule_uid__"] = "rule-b"
    document["alerts"] = [first, second]
    a, b = grafana.parse(json.dumps(document).encode()).alerts
    assert a.labels == b.labels and a.fingerprint != b.fingerprint


# ------------------------------------------------------------- Alertmanager


def test_alertmanager_says_why_it_sent_a_notification() -> None:
    n = alertmanager.parse((EXAMPLES / "payloads/reminder.json").read_bytes())
    assert n.notification_reason == "repeat interval elapsed" and n.is_reminder
    assert n.route_labels == {"team": "db"}
    first = alertmanager.parse((EXAMPLES / "payloads/firing.json").read_bytes())
    assert first.notification_reason == "" and not first.is_reminder


def test_the_default_template_tells_a_reminder_from_news() -> None:
    env = build_environment()
    reminder = alertmanager.parse((EXAMPLES / "payloads/reminder.json").read_bytes())
    news = replace(reminder, notification_reason="first notification")
    for template in ("default", "compact"):
        assert "eminder" in render(env, template, reminder, Destination(chat_id=1)), template
        assert "eminder" not in render(env, template, news, Destination(chat_id=1)), template


def test_a_reason_or_route_labels_of_an_unexpected_type_are_ignored() -> None:
    document = json.loads((EXAMPLES / "payloads/reminder.json").read_text())
    document.update(notification_reason=5, routeLabels=["team"], newField={"x": 1})
    n = alertmanager.parse(json.dumps(document).encode())
    assert n.notification_reason == "" and n.route_labels == {}


async def test_a_content_length_of_foreign_digits_is_read_not_crashed_on() -> None:
    from starlette.requests import Request

    from bridge.receiver import _read_body

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    # Header bytes are latin-1: 0xB2 is "²", a digit to isdigit() and not to int().
    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"\xb2")]}
    assert await _read_body(Request(scope, receive), 1024) == b"{}"
