"""The shipped templates, rendered from the sample payloads, byte for byte.

Each file in tests/golden/ is what one template makes of one payload in
alertmanager-examples/payloads/: review a template change by reading the
diff of these files. Every one must also pass the Telegram double's HTML
parser and fit the limit. After a deliberate change, regenerate them:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import yaml

from bridge.config import GenericSourceConfig
from bridge.models import Destination, Notification
from bridge.render import build_environment, render
from bridge.sandbox.botapi import parse_telegram_html
from bridge.sources import alertmanager, generic, grafana
from bridge.telegram_text import TELEGRAM_LIMIT, telegram_length

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "alertmanager-examples" / "payloads"
GOLDEN = ROOT / "tests" / "golden"
NOW = datetime(2026, 11, 20, 11, 5, tzinfo=UTC)
TEMPLATES = ["default", "compact", "detailed"]


def _uptime_settings() -> GenericSourceConfig:
    config = yaml.safe_load((ROOT / "alertmanager-examples" / "generic-source.yml").read_text())
    return GenericSourceConfig.model_validate(config["sources"]["uptime"])


PARSERS = {
    "firing": alertmanager.parse,
    "resolved": alertmanager.parse,
    "group-300": alertmanager.parse,
    "reminder": alertmanager.parse,
    "grafana-firing": grafana.parse,
    "grafana-documented": grafana.parse,
    "generic-uptime": partial(generic.parse, settings=_uptime_settings(), name="uptime"),
}


def _notification(payload: str) -> Notification:
    return PARSERS[payload]((PAYLOADS / f"{payload}.json").read_bytes())


def test_every_sample_payload_has_golden_files() -> None:
    assert sorted(p.stem for p in PAYLOADS.glob("*.json")) == sorted(PARSERS)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("payload", sorted(PARSERS))
def test_golden(payload: str, template: str) -> None:
    # Berlin, not UTC, so the golden files also show the timezone setting at work.
    env = build_environment(timezone="Europe/Berlin")
    html = render(env, template, _notification(payload), Destination(chat_id=-1001), now=NOW)

    visible, _entities = parse_telegram_html(html)  # raises where Telegram would refuse
    assert telegram_length(visible) <= TELEGRAM_LIMIT

    golden = GOLDEN / f"{payload}.{template}.html"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(html + "\n", encoding="utf-8")
    assert golden.is_file(), f"{golden.name} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert html + "\n" == golden.read_text(encoding="utf-8")


def test_the_300_alert_group_is_cut_with_a_count_in_every_template() -> None:
    env = build_environment()
    notification = _notification("group-300")
    for template in TEMPLATES:
        html = render(env, template, notification, Destination(chat_id=-1001), now=NOW)
        visible, _ = parse_telegram_html(html)
        assert "… and " in visible and " more" in visible, template
        assert "node-000.dc1" in visible, template  # the first alerts are kept
