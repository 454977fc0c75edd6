"""Logs: JSON a line with the delivery's fields, and never a secret, whoever logs it."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bridge import logs
from bridge.config_file import parse_config

CONFIG = """
telegram: {token: "123456:SECRET-token_value"}
database_url: "postgresql://bridge:db-pass-123@db/alertbridge"
amqp_url: "amqp://bridge:mq-pass-456@mq/"
receiver:
  auth: {basic: {username: am, password: "basic-pass-789"}}
route: {chats: [1]}
"""


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    config = parse_config(CONFIG, environ={})
    stream = io.StringIO()
    logs.configure("info", "json", logs.config_secrets(config), stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_a_library_quoting_a_secret_is_redacted(captured) -> None:
    logging.getLogger("aiohttp.client").error(
        "POST %s failed", "http://api/bot123456:SECRET-token_value/sendMessage"
    )
    logging.getLogger("asyncpg").warning("cannot connect to postgresql://bridge:db-pass-123@db/")
    try:
        raise ConnectionError("amqp://bridge:mq-pass-456@mq/ refused; basic-pass-789")
    except ConnectionError:
        logging.getLogger("bridge.service").exception("broker down")
    records = captured()
    text = json.dumps(records)
    for secret in ("SECRET-token_value", "db-pass-123", "mq-pass-456", "basic-pass-789"):
        assert secret not in text
    assert records[0]["message"] == "POST http://api/bot[REDACTED]/sendMessage failed"
    assert "[REDACTED]" in records[2]["exception"]


def test_json_records_carry_the_delivery_fields(captured) -> None:
    logging.getLogger("bridge.worker").info(
        "delivered", extra={"delivery_id": 7, "chat_id": -1001, "group_key": '{}:{a="b"}'}
    )
    [record] = captured()
    assert record["level"] == "info" and record["logger"] == "bridge.worker"
    assert (record["delivery_id"], record["chat_id"], record["group_key"]) == (
        7,
        -1001,
        '{}:{a="b"}',
    )
    assert record["message"] == "delivered" and record["time"].endswith("+00:00")
