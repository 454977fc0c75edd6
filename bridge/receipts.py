"""Producers' receipts, the pure part: what an event is called, its id, its body, its
signature, and what a POST's result makes of it. No I/O, no clock.

A receipt is a row in the store's outbox (table ``receipts``), written in the same
statement or transaction as the change it reports (``bridge/store/sql.py``,
``receipt_rows``): a delivery of a producer's message that reaches a final state
(``Transition.finishes`` in ``bridge/delivery.py``) has its receipt row, whatever
finished it. ``bridge/outbox.py`` sends the rows; this module decides everything
about them that needs no I/O.

At least once: a receipt is POSTed again until a 2xx or ``give_up_after``, and a
2xx that is lost on the way back sends it again, so the producer deduplicates by
``event_id``. The id is deterministic: the same final occurrence of the same
delivery always has the same id (a replayed transition writes no second row),
and each new one (an operator's resend that ends again) has a new id.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.backoff import jittered
from bridge.delivery import DeliveryState

#: A delivery's event is this prefix and its final state: ``message.delivered``.
MESSAGE_EVENT_PREFIX = "message."
SIGNATURE_HEADER = "X-Alertbridge-Signature"
EVENT_ID_HEADER = "X-Alertbridge-Event-Id"


class ReceiptEvent(enum.StrEnum):
    DELIVERED = MESSAGE_EVENT_PREFIX + DeliveryState.DELIVERED.value
    FAILED = MESSAGE_EVENT_PREFIX + DeliveryState.FAILED.value
    AMBIGUOUS = MESSAGE_EVENT_PREFIX + DeliveryState.AMBIGUOUS.value
    SUPPRESSED = MESSAGE_EVENT_PREFIX + DeliveryState.SUPPRESSED.value
    #: An event of no delivery (bridge/store/base.py NewEvent): a producer's user
    #: linked a chat by the deep link.
    RECIPIENT_LINKED = "recipient.linked"


class ReceiptState(enum.StrEnum):
    PENDING = "pending"  # to be sent (again), from next_attempt_at
    SENT = "sent"  # the producer answered 2xx
    GAVE_UP = "gave_up"  # no 2xx within give_up_after, or nowhere to send it


class ReceiptOutcome(enum.StrEnum):
    """``alertbridge_receipts_total{outcome}``: what became of one send attempt."""

    SENT = "sent"
    RETRIED = "retried"  # not taken: sent again later
    GAVE_UP = "gave_up"  # not taken, and give_up_after has passed
    #: The producer is no longer configured, or has no callback_url any more
    #: (a reload): nothing to send to, given up at once.
    UNCONFIGURED = "unconfigured"


def delivery_event_id(
    notification_key: uuid.UUID | str, delivery_id: int, epoch: int, state: DeliveryState | str
) -> str:
    """The event id of one final occurrence of a delivery, as the stores compute it in
    SQL (``bridge/store/sql.py`` ``EVENT_ID``): the MD5 of
    ``notification key/delivery id/operator resends/state``, hex. ``epoch`` (the
    operator resend count) tells a resend's new end from the first one."""
    text = f"{notification_key}/{delivery_id}/{epoch}/{DeliveryState(state).value}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt row claimed for sending."""

    id: int
    event_id: str
    event: str
    producer: str
    occurred_at: datetime
    #: The event's own fields (a delivery's: status, attempts, telegram_message_id,
    #: error, reason).
    payload: Mapping[str, Any] = field(default_factory=dict)
    delivery_id: int | None = None
    message_id: str | None = None
    chat_id: int | None = None
    #: Sends tried so far, this one included.
    attempts: int = 1
    state: ReceiptState = ReceiptState.PENDING
    last_error: str | None = None


def iso(moment: datetime) -> str:
    """UTC, to the microsecond, with a Z: the ``at`` of a receipt."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def body(receipt: Receipt) -> bytes:
    """The exact bytes POSTed, and signed. The same row gives the same bytes on every
    retry (the row holds everything; nothing here reads a clock)."""
    fields: dict[str, Any] = {"event": receipt.event, "event_id": receipt.event_id}
    fields["producer"] = receipt.producer
    if receipt.message_id is not None:
        fields["message_id"] = receipt.message_id
    # A delivery's receipt always says where; None: to a recipient, named instead.
    if receipt.chat_id is not None or receipt.delivery_id is not None:
        fields["chat_id"] = receipt.chat_id
    fields.update(receipt.payload)
    fields["at"] = iso(receipt.occurred_at)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, payload: bytes) -> str:
    """``X-Alertbridge-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def headers(secret: str, receipt: Receipt, payload: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, payload),
        EVENT_ID_HEADER: receipt.event_id,
    }


def taken(status: int | None) -> bool:
    """Only a 2xx answer takes a receipt; a redirect, a 4xx, a 5xx or no answer does not."""
    return status is not None and 200 <= status < 300


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: timedelta
    cap: timedelta
    give_up_after: timedelta


@dataclass(frozen=True, slots=True)
class Retry:
    delay: timedelta


@dataclass(frozen=True, slots=True)
class GiveUp:
    pass


Uniform = Callable[[float, float], float]


def after_failure(
    receipt: Receipt, now: datetime, policy: RetryPolicy, uniform: Uniform
) -> Retry | GiveUp:
    """A send not taken at ``now``: when to try again, or give up.

    Exponential backoff with equal jitter (``bridge/backoff.py``), capped; the
    last try is at the deadline (``give_up_after`` after the event), never
    later, and a failure at or past it gives up.
    """
    deadline = receipt.occurred_at + policy.give_up_after
    if now >= deadline:
        return GiveUp()
    seconds = jittered(
        receipt.attempts,
        initial=policy.initial.total_seconds(),
        cap=policy.cap.total_seconds(),
        uniform=uniform,
    )
    return Retry(min(timedelta(seconds=seconds), deadline - now))
