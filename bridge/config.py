"""The config's schema: every setting, its type, default and checks, as one
validated object (``Config``). ``bridge/config_file.py`` reads the YAML file
into it, with the file and line of anything wrong.

A reload swaps the config in force (``LiveConfig``), which every component
reads at the moment it acts. The few settings a running process cannot swap
are marked ``RESTART`` in the schema below; that mark is the only list of
them, and a reload keeps their running values and names them.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError
from bridge.retention import too_short
from bridge.routing import Route, build_route, parse_matchers

TELEGRAM_API_URL = "https://api.telegram.org"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    """Prometheus-style durations ("90s", "5m", "1h30m") or plain seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if _DURATION.fullmatch(text) or re.fullmatch(rf"(?:{_DURATION.pattern})+", text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text))
            return timedelta(seconds=seconds)
    raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


@dataclass(frozen=True, slots=True)
class NeedsRestart:
    """Marks a setting a running process reads once, at start: ``Annotated[T, RESTART]``.

    ``to_add``: only adding the section needs a restart (what it starts is not
    running); the settings inside it reload, and removing it takes effect at
    once (what it started stops acting on anything).
    """

    to_add: bool = False


RESTART = NeedsRestart()
RESTART_TO_ADD = NeedsRestart(to_add=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TelegramConfig(_Strict):
    token: str = Field(min_length=1)
    api_url: str = TELEGRAM_API_URL
    # How long one Bot API call may take before it counts as a timeout. A
    # timeout after the request was written is ambiguous, so keep it generous.
    request_timeout: Duration = timedelta(seconds=15)

    @field_validator("token")
    @classmethod
    def _token_shape(cls, token: str) -> str:
        if not re.fullmatch(r"\d+:[\w-]+", token):
            raise ValueError("a bot token looks like 123456:ABC-DEF..., as @BotFather gives it")
        return token

    @field_validator("api_url")
    @classmethod
    def _url_shape(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("api_url must start with http:// or https://")
        return url.rstrip("/")


class BasicAuth(_Strict):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class AuthConfig(_Strict):
    # An empty token would let "Authorization: Bearer " through: refuse it.
    bearer_token: str | None = Field(default=None, min_length=1)
    basic: BasicAuth | None = None


class ReceiverConfig(_Strict):
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    auth: AuthConfig | None = None


class DeliveryConfig(_Strict):
    # Copies of one notification inside this window are dropped; the same
    # content after it is a repeat reminder and is delivered again.
    dedup_window: Duration = timedelta(minutes=5)
    lease: Duration = timedelta(seconds=60)
    max_attempts: int = Field(default=12, ge=1)
    backoff_initial: Duration = timedelta(seconds=1)
    backoff_max: Duration = timedelta(minutes=5)
    on_ambiguous: Literal["assume_sent", "resend"] = "assume_sent"
    # How often the scheduler looks for due retries, unpublished rows and
    # expired leases. Lower means faster recovery and more queries.
    scheduler_interval: Duration = timedelta(seconds=1)
    # A row published but not claimed within this time is published again
    # (its message may have been lost with a broker restart). Duplicates in
    # the queue are harmless: the claim is conditional.
    republish_after: Duration = timedelta(seconds=30)


class ReceiptsConfig(_Strict):
    """How producers' delivery receipts are sent (bridge/outbox.py)."""

    # One POST may take this long; then it counts as failed and is retried.
    timeout: Duration = timedelta(seconds=10)
    # Retries wait backoff_initial, doubling up to backoff_max, half of it jittered.
    backoff_initial: Duration = timedelta(seconds=5)
    backoff_max: Duration = timedelta(minutes=10)
    # A receipt not taken (2xx) this long after its event is given up.
    give_up_after: Duration = timedelta(hours=24)
    # How often the sender looks for due receipts when it found none.
    interval: Duration = timedelta(seconds=1)
    # Receipts sent at once by one process.
    concurrency: int = Field(default=16, ge=1, le=256)


class RateLimitConfig(_Strict):
    """Telegram's limits, kept by waiting for a slot instead of collecting 429s."""

    enabled: bool = True
    per_chat_per_second: float = Field(default=1.0, gt=0)
    per_group_per_minute: int = Field(default=20, ge=1)
    # Telegram allows about 30; the rest is headroom for the bot's replies.
    per_bot_per_second: float = Field(default=25.0, ge=1)
    # A delivery whose slot is further off than this is parked in the store
    # until then, freeing the worker for other chats.
    max_inline_wait: Duration = timedelta(seconds=1)
    # A storm: when this many deliveries wait for one chat, they go out as
    # one digest message (counts by alert name); 0 turns digests off.
    digest_after: int = Field(default=20, ge=0)


class AmqpConfig(_Strict):
    exchange: str = "alertbridge"
    queue: str = "alertbridge.deliveries"
    # RabbitMQ drops (dead-letters) a message redelivered this many times: a
    # poison message cannot spin forever. The row stays in the store.
    delivery_limit: int = Field(default=20, ge=1)
    prefetch: int = Field(default=32, ge=1)
    # Work is split by chat into this many queues (QUEUE.00, QUEUE.01, ...),
    # each with one active consumer: one worker owns a chat at a time, and
    # several workers share the shards. Changing it re-routes chats.
    shards: int = Field(default=16, ge=1, le=256)
    # The RabbitMQ ingress (the receiver's side): producers publish their messages
    # to this exchange with their name as routing key; the bridge consumes them
    # from this queue. What it refuses goes to INGRESS_EXCHANGE.rejected and
    # INGRESS_QUEUE.rejected, with the reason in headers.
    ingress_exchange: str = Field(default="alertbridge.ingress", min_length=1)
    ingress_queue: str = Field(default="alertbridge.ingress", min_length=1)
    # Up to this many messages are stored in one transaction, then acked; the
    # batch waits at most ingress_batch_wait after its first message for more.
    ingress_batch: int = Field(default=200, ge=1, le=1000)
    ingress_batch_wait: Duration = timedelta(milliseconds=5)


class GenericSourceConfig(_Strict):
    """How to read one tool's JSON: dotted paths into each alert object."""

    alerts: str | None = None  # path to the list of alerts; None: the body is one alert
    status: str = "status"
    firing_values: list[str] = Field(default_factory=lambda: ["firing"], min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)  # label name -> path
    labels_from: str | None = None  # path to a mapping whose entries all become labels
    annotations: dict[str, str] = Field(default_factory=dict)  # annotation name -> path
    fingerprint: str | None = None  # default: a hash of the labels
    starts_at: str | None = None
    url: str | None = None  # becomes the alert's link (generatorURL)
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])


_BUILTIN_SOURCES = {"alertmanager", "grafana"}


class ProducerConfig(_Strict):
    """One application that may send its own messages through the HTTP API."""

    # The bearer token it authenticates with; an empty one would let anyone in.
    token: str = Field(min_length=1)
    # The chats it may address by id.
    chats: list[int] = Field(default_factory=list)
    # Whether it may also address by labels, through the route tree.
    routes: bool = False
    # The RabbitMQ user it publishes to the ingress as: its messages must carry
    # this user_id property, which RabbitMQ checks against the connection's
    # user. Unset: any publisher with the routing key speaks for it.
    amqp_user: str | None = Field(default=None, min_length=1)
    # Delivery receipts (bridge/outbox.py): where the bridge POSTs them, and the
    # key it signs them with (HMAC-SHA256). A message accepted while a URL is set
    # gets a receipt for each of its deliveries' final states.
    callback_url: str | None = None
    callback_secret: str | None = Field(default=None, min_length=1)

    @field_validator("callback_url")
    @classmethod
    def _callback_is_http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} must start with http:// or https://")
        return url

    @model_validator(mode="after")
    def _callback_needs_secret(self) -> ProducerConfig:
        if self.callback_url is not None and self.callback_secret is None:
            raise ValueError(
                "callback_url needs callback_secret (or callback_secret_file): receipts are "
                "signed, so the producer can tell them from anyone's POST"
            )
        if self.callback_url is None and self.callback_secret is not None:
            raise ValueError("callback_secret without callback_url: set both, or neither")
        return self


def _matchers(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of matcher strings, like ['severity=\"critical\"']")
    for text in value:
        try:
            parse_matchers(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
    return value


MatcherList = Annotated[list[str], BeforeValidator(_matchers)]


class AllowList(_Strict):
    """Who may: a Telegram user id in ``users``, or anyone in a chat in ``chats``."""

    users: list[int] = Field(default_factory=list)
    chats: list[int] = Field(default_factory=list)

    def allows(self, user_id: int, chat_id: int) -> bool:
        return user_id in self.users or chat_id in self.chats


class BotPermissions(_Strict):
    # /alerts, /silences. /chatid and /help are open to all: they are how
    # an operator finds the ids to put here.
    read: AllowList = AllowList()
    ack: AllowList = AllowList()
    silence: AllowList = AllowList()  # /silence, /unsilence, the Silence and Undo buttons


class BotConfig(_Strict):
    # How updates arrive: Telegram POSTs them to /telegram/webhook, or the
    # bridge long-polls getUpdates (one poller per bot, by a database lock).
    updates: Annotated[Literal["webhook", "polling"], RESTART] = "polling"
    # webhook: the public URL Telegram posts to (setWebhook at start), and
    # the secret it sends in X-Telegram-Bot-Api-Secret-Token.
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,256}$")
    set_commands: Annotated[bool, RESTART] = True
    # Inline Ack / Silence 1h / Silence 1d buttons on firing alert messages.
    buttons: bool = True
    allow: BotPermissions = BotPermissions()
    # How long a recipient link (POST /v1/recipients/{recipient}/link) may be
    # used before it expires: the time a user has to open it and press Start.
    link_expiry: Duration = timedelta(hours=24)

    @field_validator("link_expiry")
    @classmethod
    def _positive_expiry(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("link_expiry must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> BotConfig:
        if self.updates == "webhook" and not self.webhook_secret:
            raise ValueError(
                "updates: webhook needs webhook_secret, or anyone could post updates to the bridge"
            )
        return self


class AlertmanagerApiConfig(_Strict):
    # One or more (an HA pair): a silence is created on the first that answers.
    urls: list[str] = Field(min_length=1)
    bearer_token: str | None = Field(default=None, min_length=1)
    basic: BasicAuth | None = None
    timeout: Duration = timedelta(seconds=10)
    # Which labels identify an alert for /silence; empty: all its labels.
    silence_labels: list[str] = Field(default_factory=list)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in urls]


class RouteConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    matchers: MatcherList = Field(default_factory=list)
    chats: list[int] | None = None
    thread_id: int | None = None
    template: str | None = None
    silent: MatcherList | None = None
    continue_: bool = Field(default=False, alias="continue")
    routes: list[RouteConfig] = Field(default_factory=list)


class Config(_Strict):
    # The Bot API connection is opened at start.
    telegram: Annotated[TelegramConfig, RESTART]
    # Both set: PostgreSQL and RabbitMQ, any number of processes. Neither:
    # standalone, one process with its state in the SQLite file below.
    database_url: Annotated[str | None, RESTART] = None
    # Connections each process keeps to PostgreSQL at most. Reads (a producer's
    # status lookup, the probes) wait behind writes for a free one: more helps a
    # busy receiver, within the server's max_connections over all processes.
    database_pool_size: Annotated[int, RESTART, Field(ge=1, le=1000)] = 10
    amqp_url: Annotated[str | None, RESTART] = None
    sqlite_path: Annotated[Path, RESTART] = Path("alertbridge.db")
    listen: Annotated[str, RESTART] = "0.0.0.0:8080"
    receiver: ReceiverConfig = ReceiverConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    # Finished deliveries, their notifications, closed threads and seen
    # Telegram updates are deleted this long after they finished
    # (bridge/retention.py). At least delivery.dedup_window: a copy must still
    # find its notification.
    retention: Duration = timedelta(days=30)
    # Queues, shards and the consumer are declared at start.
    amqp: Annotated[AmqpConfig, RESTART] = AmqpConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    template_dirs: list[Path] = Field(default_factory=list)
    # The zone templates show times in (the `datetime` filter's default).
    timezone: str = "UTC"
    sources: dict[str, GenericSourceConfig] = Field(default_factory=dict)
    # Applications that send their own messages (POST /v1/messages); None: the API is off.
    producers: dict[str, ProducerConfig] | None = None
    # How their delivery receipts are sent (to each producer's callback_url).
    receipts: ReceiptsConfig = ReceiptsConfig()
    # Telegram commands and buttons; without it the bridge only sends.
    bot: Annotated[BotConfig | None, RESTART_TO_ADD] = None
    # Alertmanager's API, for /alerts, /silences and silences from Telegram.
    alertmanager: AlertmanagerApiConfig | None = None
    route: RouteConfig

    @field_validator("sources")
    @classmethod
    def _source_names(
        cls, sources: dict[str, GenericSourceConfig]
    ) -> dict[str, GenericSourceConfig]:
        for name in sources:
            if name in _BUILTIN_SOURCES or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(
                    f"source name {name!r} must be lowercase letters, digits, - and _ "
                    f"(it is the URL path /webhook/{name}), and not {sorted(_BUILTIN_SOURCES)}"
                )
        return sources

    @field_validator("producers")
    @classmethod
    def _producer_names(
        cls, producers: dict[str, ProducerConfig] | None
    ) -> dict[str, ProducerConfig] | None:
        for name in producers or {}:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(
                    f"producer name {name!r} must be lowercase letters, digits, - and _ "
                    "(it is part of every message's identity)"
                )
        tokens = [p.token for p in (producers or {}).values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two producers share a token: a token must name one producer")
        return producers

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(
                f'{zone!r} is not a known time zone; use an IANA name like "Europe/Berlin"'
            ) from exc
        return zone

    @field_validator("retention")
    @classmethod
    def _retention_covers_dedup(cls, retention: timedelta, info: ValidationInfo) -> timedelta:
        # Declared after delivery: it is validated by now (absent if it was invalid).
        delivery = info.data.get("delivery")
        windows = {} if delivery is None else {"delivery.dedup_window": delivery.dedup_window}
        problem = too_short(retention, windows)
        if problem:
            raise ValueError(problem)
        return retention

    @field_validator("route")
    @classmethod
    def _root_takes_every_alert(cls, route: RouteConfig) -> RouteConfig:
        # Alertmanager refuses matchers on its root route too: the root is
        # where an alert that matches nothing else goes.
        if route.matchers:
            raise ValueError(
                "the root route takes every alert and has no matchers; "
                "put them on a route under routes:"
            )
        return route

    @field_validator("listen")
    @classmethod
    def _listen_shape(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError("listen must be host:port, like 0.0.0.0:8080")
        return listen

    @model_validator(mode="after")
    def _both_or_neither(self) -> Config:
        if bool(self.database_url) != bool(self.amqp_url):
            raise ValueError(
                "set both database_url and amqp_url (PostgreSQL and RabbitMQ, several "
                "processes), or neither (standalone: one process, state in sqlite_path)"
            )
        return self

    @property
    def standalone(self) -> bool:
        return not self.database_url

    @property
    def alert_buttons(self) -> bool:
        """Ack and Silence buttons on firing alert messages: the bot is on and wants them."""
        return self.bot is not None and self.bot.buttons

    @model_validator(mode="after")
    def _route_has_default(self) -> Config:
        if self.route.chats is None:
            raise ValueError("route.chats is required: the default destination for every alert")
        return self

    @model_validator(mode="after")
    def _lease_outlives_request(self) -> Config:
        # A lease that expires while the request is still in flight would let
        # the scheduler call a live send ambiguous (or, with resend, send twice).
        if self.delivery.lease <= self.telegram.request_timeout * 2:
            raise ValueError(
                f"delivery.lease ({self.delivery.lease}) must be more than twice "
                f"telegram.request_timeout ({self.telegram.request_timeout})"
            )
        return self

    def route_tree(self) -> Route:
        """The validated route section as the routing stage's tree."""
        return build_route(self.route.model_dump(by_alias=True, exclude_none=True))

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


# -- reload: what a running process takes, and what waits for a restart ------------

Settings = TypeVar("Settings", bound=BaseModel)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (``X`` or ``X | None``), if it is one."""
    candidates = [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        candidates = list(get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def restart_settings(model: type[BaseModel] = Config) -> dict[str, NeedsRestart]:
    """Every setting marked ``NeedsRestart`` in ``model``'s schema, by dotted path."""
    found: dict[str, NeedsRestart] = {}

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, info in cls.model_fields.items():
            path = prefix + (info.alias or name)
            mark = next((m for m in info.metadata if isinstance(m, NeedsRestart)), None)
            if mark is not None:
                found[path] = mark
            section = _section(info.annotation)
            if section is not None and (mark is None or mark.to_add):
                walk(section, path + ".")

    walk(model, "")
    return found


def changed_settings(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of the settings that differ, as deep as both have sections.

    Paths only, never values: the config holds secrets.
    """
    changed: list[str] = []
    for name, info in type(new).model_fields.items():
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        path = prefix + (info.alias or name)
        if isinstance(before, BaseModel) and type(before) is type(after):
            changed += changed_settings(before, after, path + ".")
        else:
            changed.append(path)
    return changed


@dataclass(frozen=True, slots=True)
class Reloaded:
    """A reload's outcome: the config now in force and what changed, by dotted path."""

    config: Config
    applied: list[str]
    # Changed in the file, kept at the running value until the next restart.
    needs_restart: list[str]

    def summary(self) -> str:
        if not self.applied and not self.needs_restart:
            return "nothing changed"
        summary = f"applied: {', '.join(self.applied) or 'nothing'}"
        if self.needs_restart:
            summary += f"; not applied, they need a restart: {', '.join(self.needs_restart)}"
        return summary


def in_force(running: Settings, loaded: Settings) -> Settings:
    """``loaded``, with every ``NeedsRestart`` setting kept at its ``running`` value.

    A section marked ``to_add`` that is not running stays off; one the file
    removes is removed (what it started stops acting at once).
    """
    data = loaded.model_dump(by_alias=True)
    kept = running.model_dump(by_alias=True)
    # Sorted: a section's own mark is applied before the marks inside it.
    for path, mark in sorted(restart_settings(type(loaded)).items()):
        *parents, leaf = path.split(".")
        source: Any = kept
        target: Any = data
        for part in parents:
            source, target = source.get(part), target.get(part)
            if not isinstance(source, dict) or not isinstance(target, dict):
                break
        else:
            if not mark.to_add:
                target[leaf] = source[leaf]
            elif source[leaf] is None:
                target[leaf] = None
    try:
        return type(loaded).model_validate(data)
    except ValidationError as exc:
        kept_paths = [p for p, mark in restart_settings(type(loaded)).items() if not mark.to_add]
        waiting = [
            path
            for path in changed_settings(running, loaded)
            if any(path == k or path.startswith(k + ".") for k in kept_paths)
        ]
        problems = "; ".join(
            (f"{dotted(e['loc'])}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(
            f"the new config holds only with {', '.join(waiting)} changed, which needs a "
            f"restart: {problems}. Restart to apply it, or reload a config that holds with "
            "the running values"
        ) from exc


def plan_reload(running: Config, loaded: Config) -> Reloaded:
    """What a reload of ``loaded`` does to a process running ``running`` (pure)."""
    now = in_force(running, loaded)
    return Reloaded(now, changed_settings(running, now), changed_settings(now, loaded))


class LiveConfig:
    """The config in force. Components ask it at the moment they act, so a
    reload reaches every one of them at once and none keeps a stale copy."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def __call__(self) -> Config:
        return self._config

    def replace(self, config: Config) -> None:
        self._config = config


def dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
