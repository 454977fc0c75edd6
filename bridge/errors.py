"""The bridge's one exception hierarchy.

Every message says what went wrong *and* what to do next, because the person
reading it is usually an operator at a terminal, not the author of the code.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration file (or an environment override) is invalid."""


class TemplateError(BridgeError):
    """A Jinja template failed to load or render."""


class PayloadError(BridgeError):
    """An incoming webhook body is not what its source promised.

    ``status`` is the HTTP status the receiver answers with; ``field`` names the
    offending field (dotted path) when one can be named.
    """

    def __init__(self, message: str, *, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class StoreUnavailable(BridgeError):
    """The database cannot be reached; callers answer 503 so senders retry."""


class QueueUnavailable(BridgeError):
    """The broker cannot be reached; the scheduler republishes from the store later."""


class TelegramUnavailable(BridgeError):
    """Telegram did not answer a call the answer needs (getMe for a link); retry later."""


class AlertmanagerError(BridgeError):
    """Alertmanager's API refused a call, or no configured Alertmanager answered."""


class BotRefusal(BridgeError):
    """A bot command or button that is not carried out; the text is the answer to
    the user. ``outcome`` is the metric label: the subclass says which, never the text."""

    outcome = "invalid"


class Denied(BotRefusal):
    """The user or chat is not in the allow-list for this action."""

    outcome = "denied"


class Invalid(BotRefusal):
    """The command cannot be carried out as asked (no reply target, bad usage, unknown id)."""

    outcome = "invalid"
