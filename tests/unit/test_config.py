"""The config file: the README's minimal example works as it is, and every
mistake is reported with its key path and line, before anything starts."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import load_config, parse_config, parse_duration
from bridge.errors import ConfigError

MINIMAL = textwrap.dedent(
    """\
    telegram:
      token: "123:ABC"
      api_url: "http://127.0.0.1:8081"     # default: Telegram's own
    database_url: "postgresql://postgres@127.0.0.1/alertbridge"
    amqp_url: "amqp://guest:guest@127.0.0.1/"
    route:
      chats: [-1001]                        # default destination
      routes:
        - matchers: ['severity="critical"']
          chats: [-1002]
          continue: true
    """
)


def test_the_minimal_config_from_the_readme_loads() -> None:
    config = parse_config(MINIMAL, environ={})
    assert config.telegram.api_url == "http://127.0.0.1:8081"
    assert config.route.chats == [-1001]
    assert config.route.routes[0].continue_ is True
    assert config.listen == "0.0.0.0:8080"
    assert config.delivery.dedup_window == timedelta(minutes=5)
    assert config.receiver.max_body_bytes == 8 * 1024 * 1024


def test_the_readme_states_the_minimal_config_verbatim() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert MINIMAL.strip() in readme.read_text()


def test_a_typo_is_reported_with_its_path_and_line() -> None:
    text = MINIMAL.replace("continue: true", "contniue: true")
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="alertbridge.yml", environ={})
    assert "alertbridge.yml:11: route.routes[0].contniue: unknown setting" in str(error.value)


def test_a_wrong_type_is_reported_with_its_path_and_line() -> None:
    text = MINIMAL.replace("chats: [-1002]", 'chats: ["ops-room"]')
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="c.yml", environ={})
    assert "c.yml:10: route.routes[0].chats[0]:" in str(error.value)


def test_a_bad_matcher_is_reported_with_its_line() -> None:
    text = MINIMAL.replace("""['severity="critical"']""", """['severity=~"(("']""")
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="c.yml", environ={})
    assert "c.yml:9: route.routes[0].matchers" in str(error.value)


def test_a_missing_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"telegram: required setting is missing"):
        parse_config("route: {chats: [1]}\n", environ={})


def test_broken_yaml_says_so() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("telegram: [unclosed\n", environ={})


def test_env_references_are_expanded_and_a_missing_one_is_an_error() -> None:
    text = MINIMAL.replace('"123:ABC"', '"${BOT_TOKEN}"')
    assert parse_config(text, environ={"BOT_TOKEN": "9:XYZ"}).telegram.token == "9:XYZ"
    with pytest.raises(ConfigError, match=r"<config>:2: environment variable BOT_TOKEN is not set"):
        parse_config(text, environ={})
    with_default = MINIMAL.replace('"123:ABC"', '"${BOT_TOKEN:-5:DEF}"')
    assert parse_config(with_default, environ={}).telegram.token == "5:DEF"


def test_secrets_come_from_files(tmp_path) -> None:
    (tmp_path / "token").write_text("42:SECRET\n")
    text = MINIMAL.replace('token: "123:ABC"', "token_file: token")
    (tmp_path / "c.yml").write_text(text)
    assert load_config(tmp_path / "c.yml", environ={}).telegram.token == "42:SECRET"


def test_a_missing_secret_file_is_an_error(tmp_path) -> None:
    text = MINIMAL.replace('token: "123:ABC"', "token_file: nope")
    (tmp_path / "c.yml").write_text(text)
    with pytest.raises(ConfigError, match="cannot read token_file"):
        load_config(tmp_path / "c.yml", environ={})


def test_the_four_essentials_are_overridden_by_the_environment() -> None:
    environ = {
        "ALERTBRIDGE_DATABASE_URL": "postgresql://elsewhere/db",
        "ALERTBRIDGE_AMQP_URL": "amqp://elsewhere/",
        "ALERTBRIDGE_TELEGRAM_TOKEN": "7:SEVEN",
        "ALERTBRIDGE_TELEGRAM_API_URL": "http://bot-api:8081/",
        "ALERTBRIDGE_LISTEN": "127.0.0.1:9999",
    }
    config = parse_config(MINIMAL, environ=environ)
    assert config.database_url == "postgresql://elsewhere/db"
    assert config.amqp_url == "amqp://elsewhere/"
    assert config.telegram.token == "7:SEVEN"
    assert config.telegram.api_url == "http://bot-api:8081"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9999)


def test_the_token_must_look_like_a_token() -> None:
    with pytest.raises(ConfigError, match=r"telegram\.token"):
        parse_config(MINIMAL.replace('"123:ABC"', '"not-a-token"'), environ={})


def test_the_lease_must_outlive_a_request() -> None:
    text = MINIMAL + "delivery:\n  lease: 10s\n"
    with pytest.raises(ConfigError, match="lease"):
        parse_config(text, environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (7, 7), ("1d", 86400)],
)
def test_durations(text, seconds) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["5 minutes", "m5", "", "-1s", True])
def test_bad_durations(text) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_load_reports_an_unreadable_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yml")


def test_an_unknown_timezone_is_reported_with_its_line() -> None:
    text = MINIMAL.replace("route:\n", "timezone: Europe/Berlln\nroute:\n")
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="c.yml", environ={})
    assert "c.yml:6: timezone: " in str(error.value)
    assert "Europe/Berlln" in str(error.value)


def test_empty_webhook_credentials_are_refused() -> None:
    # An empty bearer token would accept "Authorization: Bearer " from anyone.
    for auth in ('{bearer_token: ""}', '{basic: {username: am, password: ""}}'):
        text = MINIMAL.replace("route:\n", f"receiver:\n  auth: {auth}\nroute:\n")
        with pytest.raises(ConfigError, match=r"c.yml:7: receiver.auth"):
            parse_config(text, source="c.yml", environ={})
