"""What the rest of the bridge needs of a store: PostgreSQL and SQLite alike.

The contract tests (tests/contract/test_store.py) run the same spec against
both implementations.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Protocol

from bridge.delivery import (
    AmbiguityPolicy,
    Delivery,
    DeliveryState,
    ThreadChange,
    Transition,
    as_datetime,
    as_uuid,
)
from bridge.digest import DigestItem
from bridge.models import Notification
from bridge.receipts import Receipt, ReceiptEvent, ReceiptState, iso
from bridge.retention import Horizon, Table

#: Turns the notifications a storm digest folds into its text; the worker's, so
#: the store never renders.
DigestRenderer = Callable[[Sequence[DigestItem]], str]


@dataclass(frozen=True, slots=True)
class NewDelivery:
    chat_id: int
    thread_id: int | None
    silent: bool
    template: str
    text: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the receiver stored: ``occurrence`` is None for a copy inside the dedup window."""

    occurrence: int | None
    deliveries: list[tuple[int, int]]  # (delivery id, chat id) of the rows to deliver
    # Rows created already finished: reminders of a notification acked in that chat.
    suppressed: int = 0

    @property
    def duplicate(self) -> bool:
        return self.occurrence is None


@dataclass(frozen=True, slots=True)
class WaitingDelivery:
    """The delivery a message to a recipient not linked yet will get once the recipient
    links a chat ("wait_for_link": true): everything but the chat, which nobody knows
    yet. The message waits at most ``expires_after``; then it fails (not_linked)."""

    recipient: str
    thread_id: int | None
    silent: bool
    text: str
    expires_after: timedelta


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A producer's own message, as the API accepts it (bridge/producers.py)."""

    key: uuid.UUID  # derived from (producer, message_id): bridge.producers.message_key
    producer: str
    message_id: str
    request_hash: str
    request: str  # the canonical request, without its message_id
    deliveries: Sequence[NewDelivery]
    #: The ordering line (a group_ref): the producer's messages to one chat go in
    #: the order accepted, as an alert group's do. bridge.producers.producer_line
    line: uuid.UUID | None = None
    buttons: str | None = None  # JSON: rows of {text, url}
    disable_link_preview: bool = False
    #: The producer has a callback_url: its deliveries' final states get receipts.
    receipts: bool = False
    #: Set (and ``deliveries`` empty) for a message that waits for its recipient's
    #: link. The store checks the recipient again inside its transaction: linked by
    #: then, the message gets its delivery to that chat at once instead.
    waiting: WaitingDelivery | None = None


def resolve_waiting(message: NewMessage, chats: Mapping[tuple[str, str], int]) -> NewMessage:
    """A message that would wait, as it is stored once its recipient turns out linked
    (``chats``: (producer, recipient) → chat, read inside the store's transaction):
    with its delivery to that chat, waiting no more. Unchanged otherwise."""
    w = message.waiting
    if w is None:
        return message
    chat = chats.get((message.producer, w.recipient))
    if chat is None:
        return message
    delivery = NewDelivery(chat, w.thread_id, w.silent, template="", text=w.text)
    return replace(message, deliveries=[delivery], waiting=None)


class MessageOutcome(enum.StrEnum):
    ACCEPTED = "accepted"  # stored now: its deliveries are to be published
    REPLAYED = "replayed"  # stored before with the same request: nothing new
    CONFLICT = "conflict"  # stored before with another request: nothing new


@dataclass(frozen=True, slots=True)
class MessageDelivery:
    id: int
    chat_id: int
    state: DeliveryState
    attempts: int
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    telegram_message_id: int | None
    error: str | None
    was_ambiguous: bool


@dataclass(frozen=True, slots=True)
class MessageWait:
    """A message that has no delivery because its recipient had not linked a chat:
    still waiting until ``expires_at``, or ``expired`` (it failed: not_linked)."""

    recipient: str
    expires_at: datetime
    expired: bool


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A producer's message as stored, with its deliveries in id order."""

    message_id: str
    created_at: datetime
    request_hash: str
    request: str
    deliveries: list[MessageDelivery]
    #: Waiting for its recipient's link (then ``deliveries`` is empty), or expired so.
    wait: MessageWait | None = None


@dataclass(frozen=True, slots=True)
class ExpiredWait:
    """A message that waited for its recipient's link in vain: it failed, not_linked."""

    producer: str
    message_id: str
    recipient: str


#: The columns of a message's deliveries, in the order both stores select them.
MESSAGE_DELIVERY_COLUMNS = (
    "id, chat_id, state, attempts, last_attempt_at, finished_at, telegram_message_id, "
    "last_error, was_ambiguous"
)


def message_delivery_from_row(row: Mapping[str, Any]) -> MessageDelivery:
    """One mapper for both stores' rows (SQLite's epoch seconds and integers too)."""
    state = DeliveryState(row["state"])
    return MessageDelivery(
        id=int(row["id"]),
        chat_id=int(row["chat_id"]),
        state=state,
        attempts=int(row["attempts"]),
        last_attempt_at=as_datetime(row["last_attempt_at"]),
        delivered_at=as_datetime(row["finished_at"]) if state is DeliveryState.DELIVERED else None,
        telegram_message_id=row["telegram_message_id"],
        error=row["last_error"],
        was_ambiguous=bool(row["was_ambiguous"]),
    )


@dataclass(frozen=True, slots=True)
class MessageAccepted:
    outcome: MessageOutcome
    message: StoredMessage


@dataclass(frozen=True, slots=True)
class RecipientState:
    """A producer's recipient as the store knows it: linked to ``chat_id`` or not."""

    producer: str
    recipient: str
    chat_id: int | None
    linked_at: datetime | None

    @property
    def linked(self) -> bool:
        return self.chat_id is not None


@dataclass(frozen=True, slots=True)
class RecipientLinked:
    """A link token used: everything a ``recipient.linked`` receipt needs.

    ``replaced_chat_id``: the chat the recipient was linked to before, when it
    was linked elsewhere (re-linking moves it; the old chat gets nothing more)."""

    producer: str
    recipient: str
    chat_id: int
    linked_at: datetime
    replaced_chat_id: int | None = None
    #: The message_ids of the messages that waited for this link, in the order
    #: accepted: each got its delivery to ``chat_id`` in the same transaction.
    released: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A delivery whose claimer's lease ran out: ``written`` says whether its
    request had been written (then it is ambiguous) or not (it simply waits again)."""

    delivery_id: int
    chat_id: int
    written: bool


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """An alert message the bridge sent, as it shows now, with what the bot needs to act on it.

    A thread's first message shows its group's current state: the latest
    notification delivered in the thread. Any other message shows its own.
    """

    delivery_id: int  # the delivery of the notification shown
    chat_id: int
    message_id: int
    notification_key: uuid.UUID
    text: str
    common_labels: dict[str, str]
    resolved: bool
    # The thread's first message (``message_id`` itself for a first message).
    anchor_message_id: int
    # Who acked the notification shown, in this chat, and when.
    acked_by: str | None = None
    acked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BotSilence:
    id: int
    silence_id: str
    alertmanager_url: str
    delivery_id: int | None
    chat_id: int
    expired: bool


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    """Which deliveries an operator lists: every field given must match; newest first."""

    state: DeliveryState | None = None
    chat_id: int | None = None
    source: str | None = None
    #: Accepted at most this long ago.
    since: timedelta | None = None
    #: The deliveries of one alert group (a thread, with ``chat_id``).
    group_ref: uuid.UUID | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ThreadAnchor:
    """A group's thread in a chat: the first message the others reply to."""

    message_id: int
    opened_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery row as an operator reads it, the same from either store."""

    id: int
    state: DeliveryState
    chat_id: int
    thread_id: int | None
    source: str
    receiver: str
    group_key: str
    notification_key: uuid.UUID | None
    occurrence: int
    template: str
    text: str
    silent: bool
    plain_text: bool
    attempts: int
    created_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    last_error: str | None
    telegram_message_id: int | None
    reply_to_message_id: int | None
    was_ambiguous: bool
    group_ref: uuid.UUID | None
    digest_id: int | None
    operator_note: str | None
    operator_resends: int
    #: Its group's thread in its chat (for ``delivery``; None in a listing).
    thread: ThreadAnchor | None = None


#: What both stores select for a DeliveryRecord, ``d`` the delivery, ``n`` its notification.
RECORD_COLUMNS = (
    "d.id, d.state, d.chat_id, d.thread_id, n.source, n.receiver, n.group_key, "
    "d.notification_key, d.occurrence, d.template, d.text, d.silent, d.plain_text, "
    "d.attempts, d.created_at, d.last_attempt_at, d.next_attempt_at, d.finished_at, "
    "d.reason, d.last_error, d.telegram_message_id, d.reply_to_message_id, "
    "d.was_ambiguous, d.group_ref, d.digest_id, d.operator_note, d.operator_resends"
)


def record_from_row(row: Mapping[str, Any], thread: ThreadAnchor | None = None) -> DeliveryRecord:
    """One mapper for both stores: SQLite's integers, text and epoch seconds become
    PostgreSQL's booleans, UUIDs and timestamps."""
    return DeliveryRecord(
        id=int(row["id"]),
        state=DeliveryState(row["state"]),
        chat_id=int(row["chat_id"]),
        thread_id=row["thread_id"],
        source=row["source"],
        receiver=row["receiver"],
        group_key=row["group_key"],
        notification_key=as_uuid(row["notification_key"]),
        occurrence=int(row["occurrence"]),
        template=row["template"],
        text=row["text"],
        silent=bool(row["silent"]),
        plain_text=bool(row["plain_text"]),
        attempts=int(row["attempts"]),
        created_at=as_datetime(row["created_at"]),
        last_attempt_at=as_datetime(row["last_attempt_at"]),
        next_attempt_at=as_datetime(row["next_attempt_at"]),
        finished_at=as_datetime(row["finished_at"]),
        reason=row["reason"],
        last_error=row["last_error"],
        telegram_message_id=row["telegram_message_id"],
        reply_to_message_id=row["reply_to_message_id"],
        was_ambiguous=bool(row["was_ambiguous"]),
        group_ref=as_uuid(row["group_ref"]),
        digest_id=row["digest_id"],
        operator_note=row["operator_note"],
        operator_resends=int(row["operator_resends"]),
        thread=thread,
    )


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A receipt of no delivery (``recipient.linked``), for ``Store.add_event``.

    ``event_id`` is the caller's, deterministic per occurrence (a retried insert of
    the same occurrence then writes nothing); ``payload`` the event's own fields.
    """

    event_id: str
    event: str
    producer: str
    payload: Mapping[str, Any]
    message_id: str | None = None
    chat_id: int | None = None
    delivery_id: int | None = None


def event_params(event: NewEvent) -> dict[str, object]:
    """The parameters of ``bridge.store.sql.insert_event``."""
    return {
        "event_id": event.event_id,
        "event": event.event,
        "producer": event.producer,
        "delivery_id": event.delivery_id,
        "message_id": event.message_id,
        "chat_id": event.chat_id,
        "payload": json.dumps(dict(event.payload), separators=(",", ":")),
    }


def linked_event(linked: RecipientLinked) -> NewEvent:
    """The ``recipient.linked`` receipt of one link. Its event id names this link
    (producer, recipient, chat and moment): a re-link is a new event, a retried
    insert of this one is not. The chat id stays out, as everywhere a producer reads."""
    occurrence = f"{ReceiptEvent.RECIPIENT_LINKED}/{linked.producer}/{linked.recipient}/"
    occurrence += f"{linked.chat_id}/{iso(linked.linked_at)}"
    return NewEvent(
        event_id=hashlib.md5(occurrence.encode(), usedforsecurity=False).hexdigest(),
        event=ReceiptEvent.RECIPIENT_LINKED.value,
        producer=linked.producer,
        payload={"recipient": linked.recipient, "linked_at": iso(linked.linked_at)},
    )


def receipt_from_row(row: Mapping[str, Any]) -> Receipt:
    """One mapper for both stores' receipt rows (``bridge.store.sql.RECEIPT_COLUMNS``)."""
    occurred = as_datetime(row["occurred_at"])
    assert occurred is not None  # NOT NULL
    return Receipt(
        id=int(row["id"]),
        event_id=row["event_id"],
        event=row["event"],
        producer=row["producer"],
        occurred_at=occurred,
        payload=json.loads(row["payload"]),
        delivery_id=row["delivery_id"],
        message_id=row["message_id"],
        chat_id=row["chat_id"],
        attempts=int(row["attempts"]),
        state=ReceiptState(row["state"]),
        last_error=row["last_error"],
    )


class Interactions(Protocol):
    """What the bot records: updates seen, acks, silences made from Telegram."""

    async def first_sight(self, update_id: int) -> bool:
        """True the first time ``update_id`` is seen: act on it. False: a repeat."""

    async def forget_update(self, update_id: int) -> None:
        """Handling failed before anything changed: let Telegram's retry be acted on."""

    async def message(self, chat_id: int, message_id: int) -> AlertMessage | None:
        """Alert message ``message_id`` in ``chat_id`` as it shows now, if the bridge sent it."""

    async def ack(self, message: AlertMessage, user_id: int, user_name: str) -> bool:
        """Record an ack; False if this notification was already acked in this chat."""

    async def record_silence(
        self,
        *,
        silence_id: str,
        alertmanager_url: str,
        delivery_id: int | None,
        chat_id: int,
        created_by: str,
        ends_at: datetime,
    ) -> int: ...

    async def silence(self, row_id: int) -> BotSilence | None: ...

    async def mark_silence_expired(self, silence_id: str) -> None: ...

    async def consume_link(
        self, token_hash: str, chat_id: int, *, receipts_for: Collection[str] = ()
    ) -> RecipientLinked | None:
        """Use a link token once: its (producer, recipient) → ``chat_id``, replacing
        the chat it was linked to before. None if the token is unknown, used or
        expired; of two uses at once, one links and the other gets None. When the
        producer is one of ``receipts_for``, its ``recipient.linked`` receipt is
        written in the same transaction (bridge.recipients.linked_event). The
        recipient's messages waiting for a link (not expired) get their deliveries
        to ``chat_id`` in the same transaction, in the order accepted, due for the
        scheduler to publish at once (``RecipientLinked.released``)."""

    async def unlink_chat(self, chat_id: int) -> list[RecipientState]:
        """/stop: every recipient linked to ``chat_id`` unlinked (as they were)."""


def migrations(folder: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of each migration in bridge/store/FOLDER, in order."""
    found = []
    for entry in (resources.files("bridge.store") / folder).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class Store(Protocol):
    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply what is missing; the names applied."""

    async def pending_migrations(self) -> list[str]: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    def poller_lock(self) -> AbstractAsyncContextManager[bool]:
        """Whether this process may poll Telegram for the bot (one poller per bot)."""

    def interactions(self) -> Interactions:
        """The bot's records, kept in the same store."""

    # -- receive -----------------------------------------------------------------

    async def accept(
        self,
        key: uuid.UUID,
        group: uuid.UUID,
        notification: Notification,
        deliveries: Sequence[NewDelivery],
        *,
        dedup_window: timedelta,
        republish_after: timedelta,
    ) -> Accepted: ...

    async def accept_messages(
        self, messages: Sequence[NewMessage], *, republish_after: timedelta
    ) -> list[MessageAccepted]:
        """Producers' messages, all in one transaction: each one is stored with its
        deliveries, or, when its key is stored already, answered from what is stored
        (REPLAYED for the same request hash, CONFLICT for another). One result each,
        in order; a message_id twice in one batch is stored once."""

    async def stored_message(self, producer: str, message_id: str) -> StoredMessage | None:
        """``producer``'s message ``message_id`` with its deliveries; None if unknown."""

    # -- recipients (bridge/recipients.py) ------------------------------------------

    async def create_link(
        self, producer: str, recipient: str, token_hash: str, *, ttl: timedelta
    ) -> datetime:
        """Store a one-time link token (its hash) for ``producer``'s ``recipient``, valid
        for ``ttl``; the recipient becomes known (unlinked if it was not linked). When
        the token expires."""

    async def recipient(self, producer: str, recipient: str) -> RecipientState | None:
        """``producer``'s ``recipient``; None if it never had a link (or was pruned)."""

    async def recipient_chats(self, producer: str, recipients: Sequence[str]) -> dict[str, int]:
        """The chat each of ``recipients`` is linked to; the unlinked are left out."""

    # -- work: the lifecycle's transitions (bridge/delivery.py) ----------------------

    async def claim(
        self, delivery_id: int, *, lease: timedelta, backlog_up_to: int = 0, begin: bool = False
    ) -> Delivery | None:
        """T.claim: the row with its open thread anchor; None if someone else has it,
        it is done, it is not due, or an older delivery of its group is unfinished.
        ``backlog`` counts the others waiting for its chat, up to ``backlog_up_to``.
        ``begin``: T.claim_and_begin, the request begun in the same statement."""

    async def apply(self, transition: Transition, delivery_id: int, **params: object) -> bool:
        """Run ``transition`` on one row with ``params``; False if the row was not in a
        state (or did not meet the guards) the transition starts from."""

    async def mark_delivered(
        self,
        delivery_id: int,
        message_id: int,
        *,
        plain_text: bool,
        reply_to: int | None,
        thread: ThreadChange,
    ) -> bool:
        """T.delivered, and ``thread`` applied to the group's thread in that chat."""

    async def follow_migration(
        self, delivery_id: int, old_chat_id: int, new_chat_id: int, *, error: str
    ) -> bool:
        """T.migrated; every later delivery for ``old_chat_id`` goes to the new id."""

    async def coalesce(
        self, carrier: Delivery, *, threshold: int, render: DigestRenderer
    ) -> Delivery | None:
        """Fold what waits for the carrier's chat and topic into one digest (T.digested)."""

    # -- the scheduler and the shards ---------------------------------------------

    async def take_due(
        self,
        *,
        limit: int,
        republish_after: timedelta,
        catch_up: bool = False,
        after_id: int = 0,
    ) -> list[tuple[int, int]]:
        """(id, chat id) of due, unclaimed rows, in id order; each is pushed forward
        by ``republish_after``. ``catch_up`` pages through every row whose attempt is
        due, from ``after_id``."""

    async def expire_leases(self, *, policy: AmbiguityPolicy) -> list[ExpiredLease]: ...

    async def expire_waiting(self, *, limit: int) -> list[ExpiredWait]:
        """Up to ``limit`` messages waiting for a link past their expiry: failed
        (not_linked), each with its ``message.failed`` receipt (when its producer
        wanted receipts at accept) written in the same transaction."""

    async def heartbeat(self, worker_id: str, *, ttl: timedelta) -> list[str]: ...

    async def leave(self, worker_id: str) -> None: ...

    async def prune(self, horizon: Horizon, *, limit: int) -> dict[Table, int]:
        """Delete what bridge/retention.py says may go: at most ``limit`` rows per
        table, oldest first; the count deleted of each table. Empty while another
        process prunes."""

    # -- what operators see ---------------------------------------------------------

    async def backlog(self) -> tuple[int, float]: ...

    async def state_counts(self) -> dict[DeliveryState, int]: ...

    async def state_of(self, delivery_id: int) -> DeliveryState | None:
        """One delivery's state; None for an unknown id."""

    async def find_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        """The deliveries ``query`` matches, newest first, at most ``query.limit``."""

    async def delivery(self, delivery_id: int) -> DeliveryRecord | None:
        """Everything about one delivery, its group's thread in its chat included."""

    async def operator_resends(self) -> int:
        """How many times operators resent a delivery (T.operator_resend), ever."""

    # -- producers' receipts: the outbox (bridge/receipts.py, bridge/outbox.py) -------
    # A delivery's receipt rows are written by the transitions themselves
    # (bridge/store/sql.py receipt_rows); these send them, and add other events.

    async def add_event(self, event: NewEvent) -> bool:
        """One receipt of no delivery, in one statement; False if its event_id is
        stored already. (Inside a store method's own transaction: run
        ``bridge.store.sql.insert_event(dialect)`` with ``event_params(event)``.)"""

    async def claim_receipts(self, *, limit: int, lease: timedelta) -> list[Receipt]:
        """Up to ``limit`` due receipts, each not due again for ``lease`` and its
        attempt counted; several senders never claim the same row at once."""

    async def receipt_sent(self, receipt_id: int) -> bool:
        """The producer took it (2xx): sent, never again."""

    async def receipt_not_taken(
        self, receipt_id: int, attempts: int, *, error: str, retry_in: timedelta | None
    ) -> bool:
        """Not taken by the claim that counted ``attempts``: due again in ``retry_in``,
        or given up (None). False if the row is no longer that claim's."""

    async def pending_receipts(self) -> int:
        """Receipts not yet sent nor given up."""

    async def receipts(self, producer: str, message_id: str) -> list[Receipt]:
        """The receipts of ``producer``'s message ``message_id``, in the order written."""
