"""The RabbitMQ ingress's decision, pure: one message as the broker handed it
(body, routing key, properties) → a message to store, or the rejection it gets.

A producer publishes the same JSON as ``POST /v1/messages`` to the ingress
exchange with its own name as the routing key. The routing key plays the
bearer token's part; when the producer's entry names an ``amqp_user``, the
message's ``user_id`` property must be it, and RabbitMQ itself has checked
that property against the user the publisher logged in as: it proves who
published. Everything after that is the HTTP API's rule (bridge/producer_accept.py).

A rejection carries a typed reason, ``STATUS:FIELD``: the status the HTTP API
would answer and the field at fault (``body`` when none can be named), so
producers read one vocabulary whichever door they use. Two have no HTTP twin:
``401:routing_key`` (no producer of that name) and ``401:user_id``; and a
message_id used before with another body is ``409:message_id`` (the HTTP API's
422 with ``differs``), told apart from a message_id that is malformed.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.errors import PayloadError
from bridge.producer_accept import conflict_error, named_recipients, prepare
from bridge.producers import MessageRequest, differences, parse_json
from bridge.store.base import NewMessage

if TYPE_CHECKING:
    from bridge.receiver import Rules

#: The headers a rejected message carries to the rejected queue.
REASON_HEADER = "x-alertbridge-reason"
ERROR_HEADER = "x-alertbridge-error"


class IngressOutcome(enum.StrEnum):
    """The metric label of what became of one message (besides ``rejected_<status>``)."""

    ACCEPTED = "accepted"  # stored now, acked
    REPLAYED = "replayed"  # stored before with the same body: acked, nothing sent twice
    STORE_UNAVAILABLE = "store_unavailable"  # a try that did not store: held, tried again


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the decision reads of one broker message."""

    body: bytes
    routing_key: str
    #: The ``user_id`` property: RabbitMQ refuses a message whose user_id is not
    #: the publishing connection's user, so it names who published.
    user_id: str | None = None
    #: The ``message_id`` property is not read: aio-pika, for one, fills it with
    #: a fresh random id on every publish, which would make each retry a new
    #: message. The body's message_id is the message's.


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    field: str | None
    error: str  # for people: never a metric label or a branch

    @property
    def reason(self) -> str:
        """The typed code for the ``x-alertbridge-reason`` header."""
        return f"{self.status}:{self.field or 'body'}"

    @property
    def outcome(self) -> str:
        """The metric label: a status, never the text."""
        return f"rejected_{self.status}"


@dataclass(frozen=True, slots=True)
class Decision:
    """One message decided before the store: ``message`` to store, or ``rejection``."""

    #: The producer the routing key names; "" when it names none (and the metric
    #: label stays bounded whatever routing keys are published).
    producer: str
    message_id: str | None
    request: MessageRequest | None
    message: NewMessage | None
    rejection: Rejection | None


def _rejected(producer: str, body: bytes, rejection: Rejection) -> Decision:
    """A rejection before the body was read: its message_id, if it has one, for the logs."""
    message_id: str | None = None
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message_id"), str):
            message_id = parsed["message_id"]
    return Decision(producer, message_id, None, None, rejection)


def named_recipient(envelope: Envelope) -> str | None:
    """The recipient the message addresses, if any: the store is asked which chat
    each is linked to before the batch is decided (``decide``'s ``linked``)."""
    if b'"recipient"' not in envelope.body:  # most messages: no need to parse twice
        return None
    try:
        body = json.loads(envelope.body)
    except ValueError:
        return None
    return next(iter(named_recipients([body])), None)


def decide(rules: Rules, envelope: Envelope, linked: Mapping[str, int]) -> Decision:
    """Whether the message is one to store, by the rules in force. ``linked``: the
    chat of each of its producer's recipients it may name (``named_recipient``)."""
    producers = rules.config.producers
    name = envelope.routing_key
    producer = None if producers is None else producers.get(name)
    if producer is None:
        hint = (
            "the bridge has no producers: section in its config"
            if producers is None
            else "publish with your producer's name (as in the config's producers:) "
            "as the routing key"
        )
        return _rejected(
            "",
            envelope.body,
            Rejection(401, "routing_key", f"no producer is named {name!r}: {hint}"),
        )
    if producer.amqp_user is not None and envelope.user_id != producer.amqp_user:
        return _rejected(
            name,
            envelope.body,
            Rejection(
                401,
                "user_id",
                f"producer {name!r} publishes as RabbitMQ user {producer.amqp_user!r}: "
                "set the user_id property to it and publish with that user "
                f"(got {envelope.user_id!r})",
            ),
        )
    max_bytes = rules.config.receiver.max_body_bytes
    if len(envelope.body) > max_bytes:
        return _rejected(
            name,
            envelope.body,
            Rejection(413, None, f"body of {len(envelope.body)} bytes is over {max_bytes}"),
        )
    try:
        body = parse_json(envelope.body)
    except PayloadError as exc:
        return _rejected(name, envelope.body, Rejection(exc.status, exc.field, str(exc)))
    checked = prepare(rules, name, producer, body, None, linked)
    if checked.refusal is not None:
        refusal = checked.refusal
        rejection = Rejection(refusal.status, refusal.field, str(refusal))
        if checked.request is None:
            return _rejected(name, envelope.body, rejection)
        # Kept with its request: one refused as not linked may be a replay of a
        # message stored before (``unlinked``), answered from the store.
        return Decision(name, checked.request.message_id, checked.request, None, rejection)
    assert checked.request is not None
    return Decision(name, checked.request.message_id, checked.request, checked.message, None)


def unlinked(decision: Decision) -> bool:
    """Refused only because its recipient is not linked (now)."""
    return (
        decision.request is not None
        and decision.rejection is not None
        and decision.rejection.status == 409
        and decision.rejection.field == "recipient"
    )


def conflict(stored_request: str, request: MessageRequest) -> Rejection:
    """The rejection of a message_id stored before with another body."""
    return Rejection(409, "message_id", conflict_error(differences(stored_request, request)))
