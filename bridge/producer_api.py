"""The producers' HTTP API: ``/v1/messages``. Accepted means stored, as for webhooks.

authenticate → read → check, render, persist, publish (bridge/producer_accept.py,
shared with the RabbitMQ ingress) → answer.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from bridge.config import ProducerConfig
from bridge.errors import PayloadError, StoreUnavailable, TelegramUnavailable
from bridge.producer_accept import (
    Checked,
    conflict_error,
    named_recipients,
    prepare,
    publish_accepted,
    store_messages,
    stored_answer,
    unlinked,
)
from bridge.producer_openapi import openapi
from bridge.producers import (
    MAX_BATCH,
    MessageRequest,
    differences,
    message_json,
    parse_json,
    receipt_json,
)
from bridge.recipients import (
    check_recipient,
    link_json,
    link_url,
    new_token,
    recipient_json,
    token_hash,
)
from bridge.sources import unstorable
from bridge.store.base import MessageAccepted, MessageOutcome

if TYPE_CHECKING:
    from bridge.receiver import ReceiverDeps

log = logging.getLogger(__name__)

TURN_ON = (
    "the producer API is off: add a producers: section to the config "
    "(a name per application, with its token and the chats it may send to)"
)
BOT_OFF = (
    "recipients' links need the bot: add a bot: section to the config (and restart), "
    "so the bridge receives the /start the link opens"
)


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message, **extra}, status_code=status)


def _store_down() -> JSONResponse:
    """Nothing was stored (or read): a retry is safe, and is what to do."""
    return _error(503, "the database is unavailable; retry later")


#: An endpoint of the API, called with the producer the request authenticated as.
Handler = Callable[[Request, str, ProducerConfig], Awaitable[Response]]


def producer_for(
    producers: dict[str, ProducerConfig], header: str
) -> tuple[str, ProducerConfig] | None:
    """The producer whose bearer token ``header`` carries. Every token is compared,
    each in constant time: neither the answer's time nor its path says which
    producer came close."""
    scheme, _, token = header.partition(" ")
    found: tuple[str, ProducerConfig] | None = None
    for name, producer in producers.items():
        if hmac.compare_digest(token.encode(), producer.token.encode()) and found is None:
            found = (name, producer)
    return found if scheme.lower() == "bearer" else None


def _refusal(exc: PayloadError, message_id: str | None) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "result": "refused",
        "code": exc.status,
        "error": str(exc),
        "field": exc.field,
    }


def _answer(done: MessageAccepted, request: MessageRequest) -> tuple[int, dict[str, Any]]:
    """The status and body one stored (or replayed, or conflicting) message gets."""
    stored = done.message
    match done.outcome:
        case MessageOutcome.ACCEPTED:
            return 202, {"result": "accepted", **message_json(stored)}
        case MessageOutcome.REPLAYED:
            return 200, {"result": "replayed", **message_json(stored)}
    differ = differences(stored.request, request)
    return 422, {
        "message_id": request.message_id,
        "result": "refused",
        "code": 422,
        "error": conflict_error(differ),
        "field": differ[0] if differ else None,
        "differs": differ,
    }


def producer_routes(
    deps: ReceiverDeps, read_body: Callable[[Request, int], Awaitable[bytes]]
) -> list[HttpRoute]:
    """The API's routes; ``deps`` is the receiver's (rules, store, publisher, metrics)."""

    def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint for ``handler``: called with the producer whose bearer token
        the request carries; 404 while the API is off, 401 for no such token, and a
        request refused on reading (PayloadError) answered with its own 4xx."""

        async def endpoint(request: Request) -> Response:
            producers = deps.rules.config.producers
            if producers is None:
                return _error(404, TURN_ON)
            found = producer_for(producers, request.headers.get("authorization", ""))
            if found is None:
                deps.metrics.producer_messages.labels("", "unauthorized").inc()
                return _error(401, "missing or wrong bearer token")
            try:
                return await handler(request, *found)
            except PayloadError as exc:
                return _error(exc.status, str(exc), field=exc.field)

        return endpoint

    def count(name: str, outcomes: Sequence[MessageAccepted | Checked]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Checked):
                status = outcome.refusal.status if outcome.refusal else 0
                label = f"refused_{status}"
                if unlinked(outcome) and outcome.request is not None:
                    deps.metrics.recipient_links.labels(name, "unlinked_message").inc()
                    log.warning(
                        "producer %s message %r refused: recipient %r is not linked",
                        name,
                        outcome.request.message_id,
                        outcome.request.recipient,
                    )
            else:
                label = outcome.outcome.value
            deps.metrics.producer_messages.labels(name, label).inc()

    async def body_of(request: Request) -> object:
        return parse_json(await read_body(request, deps.rules.config.receiver.max_body_bytes))

    async def post_message(request: Request, name: str, producer: ProducerConfig) -> Response:
        body = await body_of(request)
        try:
            linked = await deps.store.recipient_chats(name, named_recipients([body]))
            checked = prepare(
                deps.rules, name, producer, body, request.headers.get("idempotency-key"), linked
            )
            stored = None
            if unlinked(checked) and checked.request is not None:
                stored = await deps.store.stored_message(name, checked.request.message_id)
            if checked.message is None or checked.request is None:
                if stored is None or checked.request is None:
                    assert checked.refusal is not None
                    refused = checked.refusal
                    count(name, [checked])
                    return _error(refused.status, str(refused), field=refused.field)
                done = stored_answer(stored, checked.request)
            else:
                (done,) = await store_messages(
                    deps.store, deps.metrics, [checked.message], rules=deps.rules
                )
        except StoreUnavailable as exc:
            deps.metrics.producer_messages.labels(name, "store_unavailable").inc()
            log.error("producer %s message not stored: %s", name, exc)
            return _store_down()
        await publish_accepted(deps.publisher, deps.metrics, [done])
        count(name, [done])
        status, answer = _answer(done, checked.request)
        if status == 422:
            return _error(422, answer["error"], field=answer["field"], differs=answer["differs"])
        log.info(
            "producer %s message %r %s: %d deliveries",
            name,
            checked.request.message_id,
            done.outcome.value,
            len(done.message.deliveries),
        )
        answer.pop("result")
        headers = {"Idempotent-Replayed": "true"} if status == 200 else None
        return JSONResponse(answer, status_code=status, headers=headers)

    async def post_batch(request: Request, name: str, producer: ProducerConfig) -> Response:
        body = await body_of(request)
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            return _error(
                422, f'the body must be {{"messages": [...]}} with 1 to {MAX_BATCH} messages'
            )
        try:
            linked = await deps.store.recipient_chats(name, named_recipients(items))
            checked = [prepare(deps.rules, name, producer, item, None, linked) for item in items]
            # Refused as not linked, but stored before: answered as the replay it is.
            before = {
                index: found
                for index, c in enumerate(checked)
                if unlinked(c) and c.request is not None
                if (found := await deps.store.stored_message(name, c.request.message_id))
            }
            to_store = [c.message for c in checked if c.message is not None]
            stored = await store_messages(deps.store, deps.metrics, to_store, rules=deps.rules)
        except StoreUnavailable as exc:
            deps.metrics.producer_messages.labels(name, "store_unavailable").inc(len(items))
            log.error("producer %s batch not stored: %s", name, exc)
            return _store_down()
        await publish_accepted(deps.publisher, deps.metrics, stored)
        refused = [c for i, c in enumerate(checked) if c.message is None and i not in before]
        count(name, [*stored, *refused])
        answers = iter(stored)
        results: list[dict[str, Any]] = []
        for index, c in enumerate(checked):
            if index in before and c.request is not None:
                status, answer = _answer(stored_answer(before[index], c.request), c.request)
                results.append({"index": index, "code": status, **answer})
                continue
            if c.message is None or c.request is None:
                assert c.refusal is not None
                message_id = c.request.message_id if c.request else None
                results.append({"index": index, **_refusal(c.refusal, message_id)})
                continue
            status, answer = _answer(next(answers), c.request)
            results.append({"index": index, "code": status, **answer})
        log.info("producer %s batch of %d messages", name, len(items))
        return JSONResponse({"results": results})

    async def get_message(request: Request, name: str, _: ProducerConfig) -> Response:
        message_id = request.path_params["message_id"]
        if unstorable(message_id) is not None:  # never stored, so never found
            return _error(404, f"no message {message_id!r} from this producer")
        try:
            stored = await deps.store.stored_message(name, message_id)
            receipts = [] if stored is None else await deps.store.receipts(name, message_id)
        except StoreUnavailable:
            return _store_down()
        if stored is None:
            return _error(404, f"no message {message_id!r} from this producer")
        answer = {**message_json(stored), "receipts": [receipt_json(r) for r in receipts]}
        return JSONResponse(answer)

    async def post_link(request: Request, name: str, _: ProducerConfig) -> Response:
        recipient = check_recipient(request.path_params["recipient"])
        bot = deps.rules.config.bot
        if bot is None or deps.bot_username is None:
            return _error(409, BOT_OFF)
        try:
            username = await deps.bot_username()
        except TelegramUnavailable as exc:
            log.error("producer %s link for %r: %s", name, recipient, exc)
            return _error(503, f"{exc}; retry later")
        token = new_token()
        try:
            expires_at = await deps.store.create_link(
                name, recipient, token_hash(token), ttl=bot.link_expiry
            )
        except StoreUnavailable as exc:
            log.error("producer %s link for %r not stored: %s", name, recipient, exc)
            return _store_down()
        deps.metrics.recipient_links.labels(name, "created").inc()
        log.info("producer %s: link created for recipient %r", name, recipient)
        return JSONResponse(
            link_json(recipient, link_url(username, token), expires_at), status_code=201
        )

    async def get_recipient(request: Request, name: str, _: ProducerConfig) -> Response:
        recipient = check_recipient(request.path_params["recipient"])
        try:
            state = await deps.store.recipient(name, recipient)
        except StoreUnavailable:
            return _store_down()
        if state is None:
            return _error(404, f"no recipient {recipient!r} of this producer: ask for a link first")
        return JSONResponse(recipient_json(state))

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi())

    return [
        HttpRoute("/openapi.json", openapi_json, methods=["GET"]),
        HttpRoute("/v1/messages", authenticated(post_message), methods=["POST"]),
        HttpRoute("/v1/messages/batch", authenticated(post_batch), methods=["POST"]),
        HttpRoute("/v1/messages/{message_id:path}", authenticated(get_message), methods=["GET"]),
        HttpRoute(
            "/v1/recipients/{recipient:path}/link", authenticated(post_link), methods=["POST"]
        ),
        HttpRoute("/v1/recipients/{recipient:path}", authenticated(get_recipient), methods=["GET"]),
    ]
