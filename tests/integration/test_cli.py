"""The alertbridge command: --help teaches, check-config reports and exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_config import MINIMAL


def alertbridge(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    # env: extra variables; ALERTBRIDGE_CONFIG is never inherited from the caller.
    environ = {k: v for k, v in os.environ.items() if k != "ALERTBRIDGE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**environ, **(env or {})},
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


def test_check_config_takes_the_file_as_its_argument_as_amtool_does(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    result = alertbridge("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok" in result.stdout and 'severity="critical"' in result.stdout


def test_the_named_file_wins_over_the_environment(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    result = alertbridge(
        "check-config", str(path), env={"ALERTBRIDGE_CONFIG": str(tmp_path / "elsewhere.yml")}
    )
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok" in result.stdout


def test_the_same_file_both_ways_is_fine_and_two_files_are_an_error(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    same = alertbridge("check-config", str(path), "--config", str(tmp_path / "." / path.name))
    assert same.returncode == 0, same.stderr
    other = tmp_path / "other.yml"
    other.write_text(MINIMAL)
    both = alertbridge("check-config", str(path), "--config", str(other))
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert "two config files" in both.stderr and str(other) in both.stderr


def test_render_takes_the_config_then_the_payload(tmp_path) -> None:
    path = tmp_path / "alertbridge.yml"
    path.write_text(MINIMAL)
    firing = str(EXAMPLES / "payloads/firing.json")
    positional = alertbridge("render", str(path), firing)
    assert positional.returncode == 0, positional.stderr
    assert "== chat -1002 · template default" in positional.stdout
    # The older spellings still work and say the same.
    assert alertbridge("render", "-c", str(path), firing).stdout == positional.stdout
    assert alertbridge("render", firing, "--config", str(path)).stdout == positional.stdout


def test_without_a_config_check_config_and_render_say_how_to_name_it(tmp_path) -> None:
    firing = str(EXAMPLES / "payloads/firing.json")
    for args, usage in (
        (["check-config"], "alertbridge check-config FILE"),
        (["render", firing], "alertbridge render FILE PAYLOAD"),
    ):
        result = alertbridge(*args, env={})
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert usage in result.stderr and "--config FILE" in result.stderr


def test_help_teaches_the_positional_form() -> None:
    out = alertbridge("--help").stdout
    assert "alertbridge check-config alertbridge.yml" in out
    assert "alertbridge render alertbridge.yml " in out
    assert "[CONFIG] PAYLOAD" in alertbridge("render", "--help").stdout
    assert "[CONFIG]" in alertbridge("check-config", "--help").stdout
