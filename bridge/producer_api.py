"""The producers' HTTP API: ``/v1/messages``. Accepted means stored, as for webhooks.

authenticate → read → check (shape, permission, what Telegram would refuse)
→ render → persist (replays answered from the store) → publish.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from bridge.config import ProducerConfig
from bridge.errors import PayloadError, QueueUnavailable, StoreUnavailable, TemplateError
from bridge.producer_openapi import openapi
from bridge.producers import (
    MAX_BATCH,
    MessageRequest,
    as_html,
    authorize,
    check_text,
    differences,
    message_json,
    message_key,
    parse_json,
    parse_message,
    producer_line,
)
from bridge.render import render_data
from bridge.routing import resolve
from bridge.store.base import MessageAccepted, MessageOutcome, NewDelivery, NewMessage

if TYPE_CHECKING:
    from bridge.receiver import ReceiverDeps

log = logging.getLogger(__name__)

TURN_ON = (
    "the producer API is off: add a producers: section to the config "
    "(a name per application, with its token and the chats it may send to)"
)


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message, **extra}, status_code=status)


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


@dataclass(frozen=True, slots=True)
class Checked:
    """A message ready to store, or the 4xx it gets."""

    request: MessageRequest | None
    message: NewMessage | None
    refusal: PayloadError | None


def prepare(
    deps: ReceiverDeps, name: str, producer: ProducerConfig, body: object, key_header: str | None
) -> Checked:
    """Everything before the store, for one message: PayloadError becomes a refusal."""
    request: MessageRequest | None = None
    try:
        request = parse_message(body, key_header)
        authorize(producer, request)
        return Checked(request, _new_message(deps, name, producer, request), None)
    except PayloadError as exc:
        return Checked(request, None, exc)


def _new_message(
    deps: ReceiverDeps, name: str, producer: ProducerConfig, request: MessageRequest
) -> NewMessage:
    rules = deps.rules
    content = request.canonical
    if "template" in content:
        try:
            text = render_data(rules.templates, content["template"], content["data"])
        except TemplateError as exc:
            raise PayloadError(str(exc), status=422, field="template") from exc
    else:
        text = as_html(content["text"], content["parse_mode"])
    check_text(text)
    thread_id: int | None = content["thread_id"]
    silent: bool = content["silent"]
    if request.chats is not None:
        targets = [(chat, thread_id, silent) for chat in request.chats]
    else:
        targets = [
            (d.chat_id, thread_id if thread_id is not None else d.thread_id, silent or d.silent)
            for d in resolve(rules.routes, request.labels or {})
        ]
    deliveries = [
        NewDelivery(chat_id=chat, thread_id=thread, silent=quiet, template="", text=text)
        for chat, thread, quiet in targets
    ]
    return NewMessage(
        key=message_key(name, request.message_id),
        line=producer_line(name),
        producer=name,
        message_id=request.message_id,
        request_hash=request.request_hash,
        request=request.request,
        deliveries=deliveries,
        buttons=None if content["buttons"] is None else json.dumps(content["buttons"]),
        disable_link_preview=content["disable_link_preview"],
        # Receipts are due for a message accepted while its producer wants them.
        receipts=producer.callback_url is not None,
    )


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
        "error": (
            "this message_id was used before with a different request "
            f"(differs in: {', '.join(differ)}); use a new message_id for a new message"
        ),
        "field": differ[0] if differ else None,
        "differs": differ,
    }


async def _publish(deps: ReceiverDeps, accepted: list[MessageAccepted]) -> None:
    rows = [
        (d.id, d.chat_id)
        for done in accepted
        if done.outcome is MessageOutcome.ACCEPTED
        for d in done.message.deliveries
    ]
    if not rows:
        return
    try:
        await deps.publisher.publish(rows)
    except QueueUnavailable as exc:  # committed: the scheduler publishes them later
        deps.metrics.publish_failures.inc(len(rows))
        log.warning("producer messages stored but not published yet: %s", exc)


def producer_routes(
    deps: ReceiverDeps, read_body: Callable[[Request, int], Awaitable[bytes]]
) -> list[HttpRoute]:
    """The API's routes; ``deps`` is the receiver's (rules, store, publisher, metrics)."""

    def gate(request: Request) -> tuple[str, ProducerConfig] | Response:
        producers = deps.rules.config.producers
        if producers is None:
            return _error(404, TURN_ON)
        found = producer_for(producers, request.headers.get("authorization", ""))
        if found is None:
            deps.metrics.producer_messages.labels("", "unauthorized").inc()
            return _error(401, "missing or wrong bearer token")
        return found

    def count(name: str, outcomes: Sequence[MessageAccepted | Checked]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Checked):
                status = outcome.refusal.status if outcome.refusal else 0
                label = f"refused_{status}"
            else:
                label = outcome.outcome.value
                if outcome.outcome is MessageOutcome.ACCEPTED:
                    deps.metrics.deliveries_created.inc(len(outcome.message.deliveries))
            deps.metrics.producer_messages.labels(name, label).inc()

    async def body_of(request: Request) -> object:
        return parse_json(await read_body(request, deps.rules.config.receiver.max_body_bytes))

    async def post_message(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        name, producer = who
        try:
            body = await body_of(request)
        except PayloadError as exc:
            return _error(exc.status, str(exc), field=exc.field)
        checked = prepare(deps, name, producer, body, request.headers.get("idempotency-key"))
        if checked.message is None or checked.request is None:
            assert checked.refusal is not None
            refused = checked.refusal
            count(name, [checked])
            return _error(refused.status, str(refused), field=refused.field)
        try:
            (done,) = await deps.store.accept_messages(
                [checked.message], republish_after=deps.rules.config.delivery.republish_after
            )
        except StoreUnavailable as exc:
            deps.metrics.producer_messages.labels(name, "store_unavailable").inc()
            log.error("producer %s message not stored: %s", name, exc)
            return _error(503, "the database is unavailable; retry later")
        await _publish(deps, [done])
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

    async def post_batch(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        name, producer = who
        try:
            body = await body_of(request)
        except PayloadError as exc:
            return _error(exc.status, str(exc), field=exc.field)
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            return _error(
                422, f'the body must be {{"messages": [...]}} with 1 to {MAX_BATCH} messages'
            )
        checked = [prepare(deps, name, producer, item, None) for item in items]
        to_store = [c.message for c in checked if c.message is not None]
        try:
            stored = await deps.store.accept_messages(
                to_store, republish_after=deps.rules.config.delivery.republish_after
            )
        except StoreUnavailable as exc:
            deps.metrics.producer_messages.labels(name, "store_unavailable").inc(len(items))
            log.error("producer %s batch not stored: %s", name, exc)
            return _error(503, "the database is unavailable; retry later")
        await _publish(deps, stored)
        count(name, [*stored, *(c for c in checked if c.message is None)])
        answers = iter(stored)
        results: list[dict[str, Any]] = []
        for index, c in enumerate(checked):
            if c.message is None or c.request is None:
                assert c.refusal is not None
                message_id = c.request.message_id if c.request else None
                results.append({"index": index, **_refusal(c.refusal, message_id)})
                continue
            status, answer = _answer(next(answers), c.request)
            results.append({"index": index, "code": status, **answer})
        log.info("producer %s batch of %d messages", name, len(items))
        return JSONResponse({"results": results})

    async def get_message(request: Request) -> Response:
        who = gate(request)
        if isinstance(who, Response):
            return who
        name, _ = who
        message_id = request.path_params["message_id"]
        try:
            stored = await deps.store.stored_message(name, message_id)
        except StoreUnavailable:
            return _error(503, "the database is unavailable; retry later")
        if stored is None:
            return _error(404, f"no message {message_id!r} from this producer")
        return JSONResponse(message_json(stored))

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi())

    return [
        HttpRoute("/openapi.json", openapi_json, methods=["GET"]),
        HttpRoute("/v1/messages", post_message, methods=["POST"]),
        HttpRoute("/v1/messages/batch", post_batch, methods=["POST"]),
        HttpRoute("/v1/messages/{message_id:path}", get_message, methods=["GET"]),
    ]
