"""The config file: the README's minimal example works as it is, and every
mistake is reported with its key path and line, before anything starts."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict

from bridge.config import (
    RESTART,
    Config,
    Reloaded,
    parse_duration,
    plan_reload,
    restart_settings,
)
from bridge.config_file import load_config, parse_config
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


# -- reload: what a running process takes at once, and what waits for a restart ----------


def reload_from(running: str, loaded: str) -> Reloaded:
    return plan_reload(parse_config(running, environ={}), parse_config(loaded, environ={}))


def test_the_settings_that_need_a_restart_are_the_schema_s_marks() -> None:
    assert set(restart_settings()) == {
        "telegram",
        "database_url",
        "database_pool_size",
        "amqp_url",
        "sqlite_path",
        "listen",
        "amqp",
        "bot",
        "bot.updates",
        "bot.set_commands",
    }
    assert restart_settings()["bot"].to_add  # only adding the bot needs a restart


def test_a_new_setting_marked_restart_is_kept_and_named_by_a_reload() -> None:
    class Pool(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        size: Annotated[int, RESTART] = 4
        idle: int = 10

    class Grown(Config):
        pool: Pool = Pool()
        engine: Annotated[str, RESTART] = "fast"

    assert {"pool.size", "engine"} <= set(restart_settings(Grown))
    assert "pool.idle" not in restart_settings(Grown)
    running = Grown.model_validate(parse_config(MINIMAL, environ={}).model_dump(by_alias=True))
    loaded = running.model_copy(update={"engine": "slow", "pool": Pool(size=8, idle=20)})
    reloaded = plan_reload(running, loaded)
    assert reloaded.needs_restart == ["pool.size", "engine"]
    assert reloaded.applied == ["pool.idle"]
    in_force = reloaded.config
    assert isinstance(in_force, Grown)
    assert (in_force.engine, in_force.pool.size, in_force.pool.idle) == ("fast", 4, 20)


def test_a_reload_keeps_restart_settings_at_their_running_values_and_names_them() -> None:
    loaded = (
        MINIMAL.replace("amqp://guest:guest@127.0.0.1/", "amqp://guest:guest@elsewhere/")
        + "listen: 127.0.0.1:9999\namqp: {shards: 4}\n"
        + "rate_limits: {per_chat_per_second: 0.5}\ndelivery: {dedup_window: 1m}\n"
    )
    reloaded = reload_from(MINIMAL, loaded)
    assert reloaded.needs_restart == ["amqp_url", "listen", "amqp.shards"]
    assert reloaded.applied == ["delivery.dedup_window", "rate_limits.per_chat_per_second"]
    config = reloaded.config
    assert (config.amqp_url, config.listen, config.amqp.shards) == (
        "amqp://guest:guest@127.0.0.1/",
        "0.0.0.0:8080",
        16,
    )
    assert config.rate_limits.per_chat_per_second == 0.5
    assert "listen" in reloaded.summary() and "restart" in reloaded.summary()


def test_permissions_and_credentials_never_wait_for_a_restart() -> None:
    running = MINIMAL + (
        "receiver: {auth: {bearer_token: old-token}}\n"
        "bot: {updates: webhook, webhook_secret: old, allow: {silence: {users: [1, 2]}}}\n"
    )
    loaded = MINIMAL + (
        "receiver: {auth: {basic: {username: am, password: pw}}}\n"
        "bot: {updates: webhook, webhook_secret: new, allow: {silence: {users: [1]}}}\n"
    )
    reloaded = reload_from(running, loaded)
    assert reloaded.needs_restart == []
    config = reloaded.config
    assert config.receiver.auth is not None and config.receiver.auth.bearer_token is None
    assert config.bot is not None and config.bot.allow.silence.users == [1]
    assert config.bot.webhook_secret == "new"
    marked = {path for path, mark in restart_settings().items() if not mark.to_add}
    for permission in ("bot.allow", "bot.webhook_secret", "receiver.auth", "alertmanager"):
        assert not any(permission.startswith(path) for path in marked), permission


def test_adding_the_bot_needs_a_restart_and_removing_it_takes_effect_at_once() -> None:
    with_bot = MINIMAL + "bot: {allow: {ack: {users: [1]}}}\n"
    added = reload_from(MINIMAL, with_bot)
    assert added.config.bot is None and added.needs_restart == ["bot"]
    removed = reload_from(with_bot, MINIMAL)
    assert removed.config.bot is None and removed.applied == ["bot"]
    as_webhook = (
        MINIMAL + "bot: {updates: webhook, webhook_secret: s, allow: {ack: {users: [1]}}}\n"
    )
    switched = reload_from(with_bot, as_webhook)
    assert switched.needs_restart == ["bot.updates"]
    assert switched.config.bot is not None and switched.config.bot.updates == "polling"


def test_a_config_that_holds_only_with_new_restart_values_is_refused() -> None:
    running = MINIMAL.replace("  api_url:", "  request_timeout: 20s\n  api_url:")
    # Valid on its own, but the running request timeout (20s) stays until a
    # restart, and a 5s lease would not outlive it.
    loaded = MINIMAL.replace("  api_url:", "  request_timeout: 2s\n  api_url:")
    loaded += "delivery: {lease: 5s}\n"
    with pytest.raises(ConfigError, match=r"restart.*delivery.lease"):
        reload_from(running, loaded)
