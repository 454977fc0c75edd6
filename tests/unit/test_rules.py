"""route → render together: what the receiver stores for each destination.

A template that passed the start-up check can still fail on a payload nobody
foresaw; the alert must arrive anyway, in the bridge's own default template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.config_file import parse_config
from bridge.errors import TemplateError
from bridge.models import Notification
from bridge.receiver import Rules, route_and_render
from bridge.sources import alertmanager
from tests.payloads import alert, webhook

# Renders the team label, and divides by zero for team="boom": a bug the
# start-up check's sample alerts (which have no team) cannot find.
FRAGILE = "{{ common_labels.get('team', '-') if common_labels.get('team') != 'boom' else 1 // 0 }}"


def _rules(tmp_path: Path, template_file: str, route_template: str) -> Rules:
    (tmp_path / template_file).write_text(FRAGILE)
    config = parse_config(
        f"""
telegram: {{token: "1:x"}}
template_dirs: [{tmp_path}]
route:
  chats: [-1001]
  template: {route_template}
""",
        environ={},
    )
    return Rules.from_config(config)


def _notification(team: str) -> Notification:
    body = webhook(alert("DiskFull", labels={"team": team}))
    return alertmanager.parse(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("template_file", "route_template"),
    [("fragile.html.j2", "fragile"), ("default.html.j2", "default")],
)
def test_a_template_failing_at_run_time_falls_back_to_the_builtin_default(
    tmp_path: Path, template_file: str, route_template: str, caplog: pytest.LogCaptureFixture
) -> None:
    rules = _rules(tmp_path, template_file, route_template)
    assert route_and_render(rules, _notification("db"))[0].text == "db"

    [delivery] = route_and_render(rules, _notification("boom"))
    assert "DiskFull" in delivery.text and "FIRING" in delivery.text  # the built-in default
    assert "ZeroDivisionError" in caplog.text and "chat -1001" in caplog.text


def test_a_template_failing_at_start_up_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.html.j2").write_text("{{ nope.attr }}")
    config = parse_config(
        f'telegram: {{token: "1:x"}}\ntemplate_dirs: [{tmp_path}]\nroute: {{chats: [1]}}\n',
        environ={},
    )
    with pytest.raises(TemplateError, match="template 'broken' line 1"):
        Rules.from_config(config)
