"""The alertbridge command: --help teaches, check-config reports and exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.test_config import MINIMAL


def alertbridge(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_help_names_every_command_and_the_environment() -> None:
    out = alertbridge("--help").stdout
    for word in ("serve", "receiver", "worker", "migrate", "check-config", "ALERTBRIDGE_CONFIG"):
        assert word in out


def test_check_config_prints_the_route_tree(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    result = alertbridge("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert 'severity="critical"' in result.stdout and "-1002" in result.stdout


def test_check_config_reports_a_typo_with_its_line_and_fails(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL.replace("chats: [-1001]", "chat: [-1001]"))
    result = alertbridge("check-config", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:7: route.chat: unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_config_says_how_to_give_one() -> None:
    result = alertbridge("serve")
    assert result.returncode == 2
    assert "--config" in result.stderr and "ALERTBRIDGE_CONFIG" in result.stderr


def test_a_database_without_a_broker_says_both_or_neither(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(
        MINIMAL.replace('database_url: "postgresql://postgres@127.0.0.1/alertbridge"\n', "")
    )
    result = alertbridge("serve", "--config", str(path))
    assert result.returncode == 2
    assert "set both database_url and amqp_url" in result.stderr
    assert "or neither (standalone" in result.stderr


EXAMPLES = Path(__file__).resolve().parents[2] / "alertmanager-examples"


def test_render_shows_each_destination_and_its_length(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    result = alertbridge(
        "render", "-c", str(path), str(EXAMPLES / "payloads/firing.json"), "--visible"
    )
    assert result.returncode == 0, result.stderr
    # The sample is critical: the critical route's chat, with the label text as people see it.
    assert "== chat -1002 · template default" in result.stdout
    assert "/4096 UTF-16 units visible" in result.stdout
    assert "<502 Bad Gateway> & retries" in result.stdout


def test_render_reports_a_bad_payload_without_a_traceback(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "4", "alerts": []}')
    result = alertbridge("render", "-c", str(path), str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "groupKey" in result.stderr or "alerts" in result.stderr
    missing = alertbridge("render", "-c", str(path), str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read the payload" in missing.stderr


def test_check_config_fails_on_a_broken_template_naming_it_and_the_line(tmp_path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "ops.html.j2").write_text("<b>{{ status }}</b>\n{{ no_such_thing.x }}\n")
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL + f"template_dirs: [{templates}]\n")
    result = alertbridge("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "'ops'" in result.stderr and "line 2" in result.stderr
