"""Accepting a producer's message, whichever door it came in by: the HTTP API
(bridge/producer_api.py) or the RabbitMQ ingress (bridge/ingress_consumer.py).

check (shape, permission, what Telegram would refuse) → render → persist
(replays answered from the store) → publish. The rule of what is accepted,
replayed or refused lives here once; each door only translates the outcome
into its own answer (an HTTP status, an ack or a dead letter).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.config import ProducerConfig
from bridge.errors import PayloadError, QueueUnavailable, TemplateError
from bridge.metrics import Metrics
from bridge.producers import (
    MessageRequest,
    as_html,
    authorize,
    check_text,
    message_key,
    parse_message,
    producer_line,
)
from bridge.recipients import check_recipient, not_linked
from bridge.render import render_data
from bridge.routing import resolve
from bridge.scheduler import Publisher
from bridge.store.base import (
    MessageAccepted,
    MessageOutcome,
    NewDelivery,
    NewMessage,
    Store,
    StoredMessage,
    WaitingDelivery,
)

if TYPE_CHECKING:
    from bridge.receiver import Rules

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checked:
    """A message ready to store, or the 4xx it gets."""

    request: MessageRequest | None
    message: NewMessage | None
    refusal: PayloadError | None


def prepare(
    rules: Rules,
    name: str,
    producer: ProducerConfig,
    body: object,
    key_header: str | None,
    linked: Mapping[str, int],
) -> Checked:
    """Everything before the store, for one message: PayloadError becomes a refusal.
    ``key_header``: the message_id given beside the body (Idempotency-Key).
    ``linked``: the chat of each of the producer's recipients the request may name."""
    request: MessageRequest | None = None
    try:
        request = parse_message(body, key_header)
        authorize(producer, request)
        return Checked(request, _new_message(rules, name, producer, request, linked), None)
    except PayloadError as exc:
        return Checked(request, None, exc)


def named_recipients(bodies: Sequence[object]) -> list[str]:
    """The recipients the bodies name, to look up their chats in one query. Only
    valid ids: an invalid one is refused by parse_message, and never reaches the
    store (PostgreSQL's text refuses a NUL)."""
    found = (b.get("recipient") for b in bodies if isinstance(b, dict))
    return list(dict.fromkeys(r for r in map(_valid_recipient, found) if r is not None))


def _valid_recipient(value: object) -> str | None:
    try:
        return check_recipient(value)
    except PayloadError:
        return None


def _new_message(
    rules: Rules,
    name: str,
    producer: ProducerConfig,
    request: MessageRequest,
    linked: Mapping[str, int],
) -> NewMessage:
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
    elif request.recipient is not None:
        chat = linked.get(request.recipient)
        if chat is None:
            waiting = _waiting(rules, request.recipient, request, text)
            return _message(name, producer, request, [], waiting)
        targets = [(chat, thread_id, silent)]
    else:
        targets = [
            (d.chat_id, thread_id if thread_id is not None else d.thread_id, silent or d.silent)
            for d in resolve(rules.routes, request.labels or {})
        ]
    deliveries = [
        NewDelivery(chat_id=chat, thread_id=thread, silent=quiet, template="", text=text)
        for chat, thread, quiet in targets
    ]
    return _message(name, producer, request, deliveries, None)


def _waiting(rules: Rules, recipient: str, request: MessageRequest, text: str) -> WaitingDelivery:
    """A message to a recipient not linked: 409, or (``wait_for_link``) stored to wait
    for the link as long as a link asked for now would be valid (``bot.link_expiry``).
    Without a bot nothing can link, so it is refused as not linked."""
    bot = rules.config.bot
    if not request.wait_for_link:
        raise not_linked(recipient)
    if bot is None:
        raise not_linked(recipient, bot_configured=False)
    content = request.canonical
    return WaitingDelivery(
        recipient=recipient,
        thread_id=content["thread_id"],
        silent=content["silent"],
        text=text,
        expires_after=bot.link_expiry,
    )


def _message(
    name: str,
    producer: ProducerConfig,
    request: MessageRequest,
    deliveries: list[NewDelivery],
    waiting: WaitingDelivery | None,
) -> NewMessage:
    content = request.canonical
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
        waiting=waiting,
    )


def unlinked(checked: Checked) -> bool:
    """Refused because its recipient is not linked (now): a message stored before
    under the same message_id is still answered as the replay it is."""
    return checked.refusal is not None and checked.refusal.status == 409


def stored_answer(stored: StoredMessage, request: MessageRequest) -> MessageAccepted:
    """A message refused as not linked now that was stored before: its replay (or
    conflict) is answered from the store, as any replay is, and nothing is sent."""
    same = stored.request_hash == request.request_hash
    return MessageAccepted(MessageOutcome.REPLAYED if same else MessageOutcome.CONFLICT, stored)


def conflict_error(differ: Sequence[str]) -> str:
    """What a message_id used before with another request is told."""
    return (
        "this message_id was used before with a different request "
        f"(differs in: {', '.join(differ)}); use a new message_id for a new message"
    )


async def store_messages(
    store: Store, metrics: Metrics, messages: Sequence[NewMessage], *, rules: Rules
) -> list[MessageAccepted]:
    """Store ``messages`` in one transaction (StoreUnavailable: nothing stored).
    One result each, in order."""
    if not messages:
        return []
    accepted = await store.accept_messages(
        messages, republish_after=rules.config.delivery.republish_after
    )
    for message, done in zip(messages, accepted, strict=True):
        if done.outcome is MessageOutcome.ACCEPTED:
            metrics.deliveries_created.inc(len(done.message.deliveries))
            if done.message.wait is not None:
                metrics.recipient_links.labels(message.producer, "waiting_message").inc()
                log.info(
                    "producer %s message %r waits for recipient %r to link a chat",
                    message.producer,
                    message.message_id,
                    done.message.wait.recipient,
                )
    return accepted


async def publish_accepted(
    publisher: Publisher, metrics: Metrics, accepted: Sequence[MessageAccepted]
) -> None:
    """Wake the workers for the deliveries just stored. Committed already: if the
    broker does not take them, the scheduler publishes them later."""
    created = [
        (d.id, d.chat_id)
        for done in accepted
        if done.outcome is MessageOutcome.ACCEPTED
        for d in done.message.deliveries
    ]
    if not created:
        return
    try:
        await publisher.publish(created)
    except QueueUnavailable as exc:
        metrics.publish_failures.inc(len(created))
        log.warning("producer messages stored but not published yet: %s", exc)


async def store_and_publish(
    store: Store,
    publisher: Publisher,
    metrics: Metrics,
    messages: Sequence[NewMessage],
    *,
    rules: Rules,
) -> list[MessageAccepted]:
    """Store, then publish: what the HTTP API answers after."""
    accepted = await store_messages(store, metrics, messages, rules=rules)
    await publish_accepted(publisher, metrics, accepted)
    return accepted
