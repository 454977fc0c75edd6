"""Every source becomes the same Notification: Grafana's and any JSON mapped by config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.config import GenericSourceConfig
from bridge.errors import PayloadError
from bridge.models import Status
from bridge.sources import generic, grafana

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
