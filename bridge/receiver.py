"""The HTTP edge: authenticate, read, parse, key, route, render, persist, publish.

The answer is 200 only after the commit. Alertmanager treats every 4xx as
final and retries 5xx, so the status codes here are a contract: 4xx only for
a request that will never succeed as sent, 503 whenever we could not store it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from bridge.config import Config
from bridge.dedup import group_ref, notification_key
from bridge.errors import (
    PayloadError,
    QueueUnavailable,
    StoreUnavailable,
    TemplateError,
)
from bridge.metrics import Metrics
from bridge.models import Destination, Notification
from bridge.ops import Reload, ops_routes
from bridge.producer_api import producer_routes
from bridge.render import build_environment, check_templates, minimal_message, render
from bridge.routing import Route, resolve
from bridge.scheduler import Publisher
from bridge.sources import alertmanager, generic, grafana
from bridge.store import NewDelivery, Store

log = logging.getLogger(__name__)

Parser = Callable[[bytes], Notification]


@dataclass(frozen=True)
class Rules:
    """What a config reload replaces, as one value: a request sees one version."""

    config: Config
    routes: Route
    templates: jinja2.Environment
    # The bridge's own templates alone: what a message falls back to when an
    # operator's template (even one named "default") fails at run time.
    builtin: jinja2.Environment

    @classmethod
    def from_config(cls, config: Config) -> Rules:
        templates = build_environment(config.template_dirs, timezone=config.timezone)
        problems = check_templates(templates)
        if problems:
            raise TemplateError("; ".join(problems))
        builtin = build_environment(timezone=config.timezone)
        return cls(config, config.route_tree(), templates, builtin)


@dataclass
class ReceiverDeps:
    """Everything the receiver touches, passed in: no module-level state."""

    rules: Rules
    store: Store
    publisher: Publisher
    metrics: Metrics
    # Re-reads the config file and swaps `rules`; None when there is no file.
    reload: Reload | None = None
    # More endpoints served beside the webhooks (the bot's Telegram webhook).
    extra_routes: list[HttpRoute] = field(default_factory=list)
    # The bot's @username (getMe, asked once), for recipients' links; None while
    # this process runs no bot. Raises TelegramUnavailable.
    bot_username: Callable[[], Awaitable[str]] | None = None
    # Whether the RabbitMQ ingress consumes now; None while this process runs none.
    ingress_connected: Callable[[], bool] | None = None


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message, **extra}, status_code=status)


def _authorized(request: Request, config: Config) -> bool:
    auth = config.receiver.auth
    if auth is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if auth.bearer_token is not None and scheme.lower() == "bearer":
        return hmac.compare_digest(credentials.encode(), auth.bearer_token.encode())
    if auth.basic is not None and scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(credentials, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Both compared, always: no early exit that times out the username.
        user_ok = hmac.compare_digest(user, auth.basic.username.encode())
        password_ok = hmac.compare_digest(password, auth.basic.password.encode())
        return user_ok and password_ok
    return False


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    # isdigit alone admits digits of other scripts ("²", "٣"), which int() refuses.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadError(f"body of {declared} bytes is over the {limit}-byte limit", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadError(f"body is over the {limit}-byte limit", status=413)
    return bytes(body)


def route_and_render(rules: Rules, notification: Notification) -> list[NewDelivery]:
    """route → render: one delivery per destination, with the text sent on every attempt."""
    return [
        NewDelivery(
            chat_id=d.chat_id,
            thread_id=d.thread_id,
            silent=d.silent,
            template=d.template,
            text=_render_one(rules, notification, d),
        )
        for d in resolve(rules.routes, notification.common_labels)
    ]


def _render_one(rules: Rules, notification: Notification, destination: Destination) -> str:
    try:
        return render(rules.templates, destination.template, notification, destination)
    except TemplateError as exc:
        # A template that passed the start-up check can still fail on a payload
        # nobody foresaw. The alert must not be lost: say why, send the built-in.
        log.error(
            "chat %d: template %r failed (%s); using the built-in default template",
            destination.chat_id,
            destination.template,
            exc,
        )
        try:
            return render(rules.builtin, "default", notification, destination)
        except TemplateError as builtin_exc:  # a bug of ours; still deliver something
            log.error("chat %d: built-in template failed too: %s", destination.chat_id, builtin_exc)
            return minimal_message(notification)


async def _ingest(request: Request, deps: ReceiverDeps, source: str, parse: Parser) -> Response:
    metrics = deps.metrics.webhooks
    rules = deps.rules
    if not _authorized(request, rules.config):
        metrics.labels(source, "unauthorized").inc()
        return _error(401, "missing or wrong credentials", hint="see receiver.auth in the config")
    try:
        body = await _read_body(request, rules.config.receiver.max_body_bytes)
        notification = parse(body)
    except PayloadError as exc:
        metrics.labels(source, f"rejected_{exc.status}").inc()
        log.warning("%s webhook rejected (%d): %s", source, exc.status, exc)
        return _error(exc.status, str(exc), field=exc.field)

    key = notification_key(notification)
    fields = {"source": source, "notification": str(key), "group_key": notification.group_key}
    deliveries = route_and_render(rules, notification)
    settings = rules.config.delivery
    try:
        accepted = await deps.store.accept(
            key,
            group_ref(notification),
            notification,
            deliveries,
            dedup_window=settings.dedup_window,
            republish_after=settings.republish_after,
        )
    except StoreUnavailable as exc:
        metrics.labels(source, "store_unavailable").inc()
        log.error("%s webhook %s not stored: %s", source, key, exc, extra=fields)
        # 503, never 4xx: the sender keeps the notification and retries.
        return _error(503, "the database is unavailable; retry later", key=str(key))

    if accepted.duplicate:
        metrics.labels(source, "duplicate").inc()
        log.info(
            "%s notification %s: duplicate inside the dedup window, dropped",
            source,
            key,
            extra=fields,
        )
    else:
        metrics.labels(source, "accepted").inc()
        deps.metrics.deliveries_created.inc(len(accepted.deliveries) + accepted.suppressed)
        if accepted.suppressed:
            deps.metrics.deliveries_finished.labels("suppressed", "acked").inc(accepted.suppressed)
            log.info(
                "notification %s: reminder suppressed in %d acked chat(s)",
                key,
                accepted.suppressed,
                extra=fields,
            )
        log.info(
            "%s notification %s occurrence %d group %s: %d deliveries to chats %s",
            source,
            key,
            accepted.occurrence,
            notification.group_key,
            len(accepted.deliveries),
            sorted({chat for _, chat in accepted.deliveries}),
            extra=fields,
        )
        try:
            await deps.publisher.publish(accepted.deliveries)
        except QueueUnavailable as exc:
            # Committed already: the scheduler publishes these rows later.
            deps.metrics.publish_failures.inc(len(accepted.deliveries))
            log.warning("notification %s stored but not published yet: %s", key, exc, extra=fields)
    return JSONResponse(
        {
            "status": "ok",
            "key": str(key),
            "duplicate": accepted.duplicate,
            "occurrence": accepted.occurrence,
            "deliveries": [delivery_id for delivery_id, _ in accepted.deliveries],
        }
    )


def create_app(deps: ReceiverDeps) -> Starlette:
    async def alertmanager_webhook(request: Request) -> Response:
        return await _ingest(request, deps, alertmanager.SOURCE, alertmanager.parse)

    async def other_webhook(request: Request) -> Response:
        name = request.path_params["source"]
        if name == grafana.SOURCE:
            return await _ingest(request, deps, grafana.SOURCE, grafana.parse)
        sources = deps.rules.config.sources
        settings = sources.get(name)
        if settings is None:
            known = ", ".join(["grafana", *sorted(sources)])
            return _error(404, f"no source named {name!r}; configured: {known}")
        return await _ingest(
            request, deps, name, partial(generic.parse, settings=settings, name=name)
        )

    return Starlette(
        routes=[
            HttpRoute("/alertmanager", alertmanager_webhook, methods=["POST"]),
            HttpRoute("/webhook/{source}", other_webhook, methods=["POST"]),
            *producer_routes(deps, _read_body),
            *deps.extra_routes,
            *ops_routes(
                deps.store,
                lambda: deps.publisher.connected,
                deps.metrics,
                broker_required=False,
                reload=deps.reload,
                ingress_connected=deps.ingress_connected,
            ),
        ]
    )
