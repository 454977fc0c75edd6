"""Logging: plain lines for a terminal, one JSON object a line for a log pipeline.

Every record about a delivery carries ``delivery_id``, ``chat_id`` and
``group_key`` as fields (pass :func:`delivery_fields` as ``extra``), so a
log search for one chat or one alert group finds its whole story. Secrets
from the config (the bot token, passwords in URLs, webhook credentials) are
replaced by ``[REDACTED]`` in every record, whichever library wrote it:
aiohttp and aiogram errors can quote a URL, and the Bot API's URLs hold the
token.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from bridge.config import Config
from bridge.delivery import Delivery

__all__ = ["LogFormat", "config_secrets", "configure", "delivery_fields"]

LogFormat = Literal["text", "json"]

#: The structured fields a record may carry, in the order JSON shows them.
FIELDS = ("delivery_id", "chat_id", "thread_id", "group_key", "attempt", "source", "notification")
REDACTED = "[REDACTED]"


def delivery_fields(delivery: Delivery) -> dict[str, Any]:
    """``extra=`` for a log record about ``delivery``."""
    return {
        "delivery_id": delivery.id,
        "chat_id": delivery.chat_id,
        "thread_id": delivery.thread_id,
        "group_key": delivery.group_key,
        "attempt": delivery.attempts,
    }


def config_secrets(config: Config) -> list[str]:
    """Every value in ``config`` that must never appear in a log."""
    secrets = [config.telegram.token, config.telegram.token.partition(":")[2]]
    for url in (config.database_url, config.amqp_url):
        if url:
            password = urlsplit(url).password
            if password:
                secrets.append(password)
    for auth in (config.receiver.auth, config.alertmanager):
        if auth is not None:
            if auth.bearer_token:
                secrets.append(auth.bearer_token)
            if auth.basic is not None:
                secrets.append(auth.basic.password)
    if config.bot is not None and config.bot.webhook_secret:
        secrets.append(config.bot.webhook_secret)
    # Longest first, so a secret that contains another is replaced whole.
    return sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)


class _Redact(logging.Filter):
    """Replaces secrets in the rendered message and exception text of every record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.scrub(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(
    level: str,
    fmt: LogFormat = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records to ``stream`` (stderr), in ``fmt``, with ``secrets`` redacted.

    Called again (once the config, and so its secrets, is known) it replaces
    the previous setup.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # On the handler, not a logger: a handler's filters see records from
    # every library's loggers, a logger's only its own.
    handler.addFilter(_Redact(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiogram logs every failed request itself; the worker already says what
    # happened, with the delivery id and chat.
    logging.getLogger("aiogram").setLevel(logging.WARNING)
