"""The delivery lifecycle, written once. Pure: no I/O, no clock, no SQL.

A delivery is one (occurrence of a notification, destination chat) row. This
module says which states it moves through, which transition may start from
which state, what each outcome writes into the row, and which outcomes let the
next delivery of the same alert group go. The stores (``bridge/store/``) only
translate these tables into their SQL (``bridge/store/sql.py``), so PostgreSQL
and SQLite cannot drift apart on a rule.

    queued ──claim──▶ sending ──delivered──▶ delivered
      ▲  ▲              │ │ └──failed──▶ failed
      │  └──give_back───┘ └──ambiguous──▶ ambiguous (or retry, under resend)
      │                 │
      └──── retry ◀─────┘ (Telegram certainly has nothing: retry after a delay)
    queued ──▶ suppressed (an acked reminder, or folded into a storm digest)
    ambiguous, failed ──operator_resend──▶ retry (a person checked the chat)

The ambiguity window is as narrow as it can be made: a claimed row is not yet
*written*. Only ``begin_send``, the last step before the HTTP request is
written, stamps ``send_started_at``. A lease that expires before that stamp
means "never sent": the row simply waits again. One that expires after it is
ambiguous: Telegram may or may not have the message.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

# -- states ----------------------------------------------------------------------


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRY = "retry"
    DELIVERED = "delivered"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    SUPPRESSED = "suppressed"


#: Waiting for a worker: claimable once due and first in its group's line.
WAITING = frozenset({DeliveryState.QUEUED, DeliveryState.RETRY})
#: Not finished: holds back the later deliveries of its group in its chat.
UNFINISHED = WAITING | {DeliveryState.SENDING}
TERMINAL = frozenset(
    {
        DeliveryState.DELIVERED,
        DeliveryState.FAILED,
        DeliveryState.AMBIGUOUS,
        DeliveryState.SUPPRESSED,
    }
)


class Reason(enum.StrEnum):
    """Why a delivery is where it is. Metric labels and decisions read this, never text."""

    # Telegram's answers
    RATE_LIMITED = "rate_limited"  # 429: wait exactly retry_after
    FORBIDDEN = "forbidden"  # 403: blocked, kicked, not a member
    CHAT_NOT_FOUND = "chat_not_found"
    PARSE_ERROR = "parse_error"  # "can't parse entities": resent once as plain text
    REPLY_TARGET_GONE = "reply_target_gone"  # the thread's first message was deleted
    BAD_REQUEST = "bad_request"  # any other 400
    SERVER_ERROR = "server_error"  # an answered 5xx (or 401/404/409: Telegram took nothing)
    CHAT_MIGRATED = "chat_migrated"  # the group became a supergroup with a new id
    # The connection
    CONNECT = "connect"  # never connected: nothing was written
    TIMEOUT = "timeout"  # written, no answer: ambiguous
    UNDECODABLE = "undecodable"  # an answer nobody can read: ambiguous
    UNEXPECTED = "unexpected"  # an error past the request: ambiguous
    # The bridge's own
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    LEASE_EXPIRED = "lease_expired"  # the worker died or hung after writing the request
    ACKED = "acked"  # a reminder of a notification acked in that chat
    DIGEST = "digest"  # folded into a storm digest
    #: A producer's message that waited for its recipient's link in vain: it never
    #: had a delivery row (no chat was known); the message itself failed.
    NOT_LINKED = "not_linked"


#: Reasons for which Telegram may hold the message although nobody knows.
AMBIGUOUS_REASONS = frozenset(
    {Reason.TIMEOUT, Reason.UNDECODABLE, Reason.UNEXPECTED, Reason.LEASE_EXPIRED}
)


class AmbiguityPolicy(enum.StrEnum):
    """What an ambiguous delivery becomes (config ``delivery.on_ambiguous``)."""

    ASSUME_SENT = "assume_sent"  # terminal: at most once
    RESEND = "resend"  # sent again: at least once


# -- what a transition writes ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Now:
    """The store's current time, plus the duration parameter ``plus`` when given."""

    plus: str | None = None


@dataclass(frozen=True, slots=True)
class NotBefore:
    """The later of ``column``'s current value and ``at``: a time that only moves forward."""

    column: str
    at: Now


@dataclass(frozen=True, slots=True)
class DueOr:
    """``column`` (a due time) while it is still ahead, else ``otherwise``."""

    column: str
    otherwise: Now


@dataclass(frozen=True, slots=True)
class Param:
    """A value the caller passes under this name."""

    name: str


@dataclass(frozen=True, slots=True)
class Const:
    value: str | bool | int | None


@dataclass(frozen=True, slots=True)
class Increment:
    column: str
    by: int = 1


@dataclass(frozen=True, slots=True)
class WaitingAgain:
    """``queued`` if the row was never attempted, else ``retry``: handing a row back
    without sending must not make it look like a failed attempt."""


Write = Now | NotBefore | DueOr | Param | Const | Increment | WaitingAgain


class Guard(enum.Enum):
    """A condition beyond the row's state that a transition needs, as data: each store
    translates it into SQL (``bridge/store/sql.py``)."""

    DUE = "due"  # next_attempt_at has come
    FIRST_IN_GROUP = "first_in_group"  # no older unfinished delivery of its group and chat
    LEASE_HELD = "lease_held"  # the claimer's lease has not run out
    LEASE_EXPIRED = "lease_expired"
    NOT_WRITTEN = "not_written"  # no request written under the current claim
    WRITTEN = "written"
    FOLDABLE = "foldable"  # a storm digest may take it in: not a producer's own message


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity
class Transition:
    name: str
    start: frozenset[DeliveryState]
    to: DeliveryState | None  # None: the state stays (a parked or deferred row)
    writes: Mapping[str, Write]
    guards: tuple[Guard, ...] = ()
    #: The row is finished (or handed back as ambiguous): the next delivery of
    #: its group in its chat may go at once.
    releases_group: bool = False

    def allows(self, state: DeliveryState, facts: Mapping[Guard, bool]) -> bool:
        """Whether a row in ``state``, of which ``facts`` hold, takes this transition."""
        return state in self.start and all(facts[g] for g in self.guards)

    @property
    def finishes(self) -> bool:
        """The row ends in a final state: for a producer's message, a receipt is due
        (the stores write it in the same statement or transaction as the change)."""
        return self.to in TERMINAL

    def assignments(self) -> dict[str, Write]:
        """Every column this transition sets, the state included."""
        state: dict[str, Write] = {} if self.to is None else {"state": Const(self.to.value)}
        return {**state, **self.writes}


_S = DeliveryState
_FINISHED: dict[str, Write] = {"finished_at": Now(), "lease_until": Const(None)}
#: Back to waiting: no lease, and no request of the next claim written yet.
_UNCLAIMED: dict[str, Write] = {"lease_until": Const(None), "send_started_at": Const(None)}
_WAIT_AGAIN_NOW: dict[str, Write] = {"next_attempt_at": Now(), "republish_at": Now(), **_UNCLAIMED}
_WHY: dict[str, Write] = {"reason": Param("reason"), "last_error": Param("error")}


class T:
    """The lifecycle's transitions. A store method runs exactly one of them."""

    #: A worker takes a due row that is first in its group's line, for ``lease``.
    claim = Transition(
        "claim",
        WAITING,
        _S.SENDING,
        {"lease_until": Now(plus="lease"), "send_started_at": Const(None)},
        guards=(Guard.DUE, Guard.FIRST_IN_GROUP),
    )
    #: The request is about to be written: from here on a lost answer is ambiguous.
    begin_send = Transition(
        "begin_send",
        frozenset({_S.SENDING}),
        None,
        {
            "send_started_at": Now(),
            "attempts": Increment("attempts"),
            "last_attempt_at": Now(),
        },
        guards=(Guard.LEASE_HELD, Guard.NOT_WRITTEN),
    )
    #: Both at once, in one round trip, when the worker knows before the claim
    #: that nothing stands between it and the request (no rate-limit wait).
    claim_and_begin = Transition(
        "claim_and_begin",
        WAITING,
        _S.SENDING,
        {
            "lease_until": Now(plus="lease"),
            "send_started_at": Now(),
            "attempts": Increment("attempts"),
            "last_attempt_at": Now(),
        },
        guards=(Guard.DUE, Guard.FIRST_IN_GROUP),
    )
    #: A claim that began its request at once, then learnt (from the chat's backlog)
    #: that a storm is waiting: the claimer wrote nothing yet, so it takes the stamp
    #: back and paces like any claim.
    unbegin = Transition(
        "unbegin",
        frozenset({_S.SENDING}),
        None,
        {"send_started_at": Const(None), "attempts": Increment("attempts", by=-1)},
        guards=(Guard.LEASE_HELD, Guard.WRITTEN),
    )
    #: The claimer will not send now (its slot is further off than its lease):
    #: the row waits again for ``delay``, no attempt counted, its place kept.
    give_back = Transition(
        "give_back",
        frozenset({_S.SENDING}),
        None,
        {
            "state": WaitingAgain(),
            "next_attempt_at": Now(plus="delay"),
            "republish_at": Now(plus="delay"),
            **_UNCLAIMED,
        },
        guards=(Guard.NOT_WRITTEN,),
    )
    #: Telegram answered with the message's id. An answer that arrives after
    #: the lease expired (the row is ambiguous by then) settles the question.
    delivered = Transition(
        "delivered",
        frozenset({_S.SENDING, _S.AMBIGUOUS}),
        _S.DELIVERED,
        {
            **_FINISHED,
            "telegram_message_id": Param("message_id"),
            "plain_text": Param("plain_text"),
            "reply_to_message_id": Param("reply_to"),
            "reason": Const(None),
            "last_error": Const(None),
        },
        releases_group=True,
    )
    #: Telegram certainly has nothing: try again after ``delay``.
    retry = Transition(
        "retry",
        frozenset({_S.SENDING}),
        _S.RETRY,
        {
            **_WHY,
            "next_attempt_at": Now(plus="delay"),
            "republish_at": Now(plus="delay"),
            **_UNCLAIMED,
        },
    )
    failed = Transition(
        "failed", frozenset({_S.SENDING}), _S.FAILED, {**_WHY, **_FINISHED}, releases_group=True
    )
    ambiguous_assume_sent = Transition(
        "ambiguous_assume_sent",
        frozenset({_S.SENDING}),
        _S.AMBIGUOUS,
        {**_WHY, **_FINISHED, "was_ambiguous": Const(True)},
        releases_group=True,
    )
    ambiguous_resend = Transition(
        "ambiguous_resend",
        frozenset({_S.SENDING}),
        _S.RETRY,
        {**_WHY, **_WAIT_AGAIN_NOW, "was_ambiguous": Const(True)},
    )
    #: The scheduler: a claimer that died or hung before writing its request
    #: sent nothing, so the row simply waits again.
    lease_expired_unwritten = Transition(
        "lease_expired_unwritten",
        frozenset({_S.SENDING}),
        None,
        {"state": WaitingAgain(), **_WAIT_AGAIN_NOW},
        guards=(Guard.LEASE_EXPIRED, Guard.NOT_WRITTEN),
    )
    lease_expired_assume_sent = Transition(
        "lease_expired_assume_sent",
        frozenset({_S.SENDING}),
        _S.AMBIGUOUS,
        {
            **_FINISHED,
            "was_ambiguous": Const(True),
            "reason": Const(Reason.LEASE_EXPIRED.value),
            "last_error": Const("lease expired after the request was written"),
        },
        guards=(Guard.LEASE_EXPIRED, Guard.WRITTEN),
        releases_group=True,
    )
    lease_expired_resend = Transition(
        "lease_expired_resend",
        frozenset({_S.SENDING}),
        _S.RETRY,
        {
            **_WAIT_AGAIN_NOW,
            "was_ambiguous": Const(True),
            "reason": Const(Reason.LEASE_EXPIRED.value),
            "last_error": Const("lease expired after the request was written"),
        },
        guards=(Guard.LEASE_EXPIRED, Guard.WRITTEN),
    )
    #: The chat became a supergroup: send there, at once.
    migrated = Transition(
        "migrated",
        frozenset({_S.SENDING}),
        _S.RETRY,
        {
            **_WAIT_AGAIN_NOW,
            "chat_id": Param("new_chat_id"),
            "reason": Const(Reason.CHAT_MIGRATED.value),
            "last_error": Param("error"),
        },
    )
    #: A waiting row whose rate-limit slot is far off: not claimable until then.
    postpone = Transition(
        "postpone",
        WAITING,
        None,
        {
            "next_attempt_at": NotBefore("next_attempt_at", Now(plus="delay")),
            "republish_at": NotBefore("next_attempt_at", Now(plus="delay")),
        },
    )
    #: A claim missed a row that still waits: one not due yet is published when
    #: due (a retry's backoff or a parked row's slot, never ``republish_after``
    #: later); one behind its group after ``republish_after``, or sooner when
    #: the one ahead finishes.
    defer = Transition(
        "defer",
        WAITING,
        None,
        {"republish_at": DueOr("next_attempt_at", Now(plus="republish_after"))},
    )
    #: Folded into the storm digest that delivery ``digest_id`` carries. A row
    #: claimed but not yet written is folded too: its claimer's ``begin_send``
    #: then finds it finished and sends nothing. A producer's own message is
    #: never folded: it reaches the chat as written.
    digested = Transition(
        "digested",
        WAITING | {_S.SENDING},
        _S.SUPPRESSED,
        {
            **_UNCLAIMED,
            "finished_at": Now(),
            "digest_id": Param("digest_id"),
            "reason": Const(Reason.DIGEST.value),
            "last_error": Param("error"),
        },
        guards=(Guard.NOT_WRITTEN, Guard.FOLDABLE),
        releases_group=True,
    )

    #: A person checked the chat and asks for the message again (``alertbridge
    #: deliveries resend``): the row waits again, due and published at once, so
    #: the running scheduler hands it to a worker. ``note`` says who asked and
    #: when; ``was_ambiguous`` stays, the count of operator resends goes up.
    operator_resend = Transition(
        "operator_resend",
        frozenset({_S.AMBIGUOUS, _S.FAILED}),
        None,
        {
            "state": WaitingAgain(),
            **_WAIT_AGAIN_NOW,
            "finished_at": Const(None),
            "operator_note": Param("note"),
            "operator_resends": Increment("operator_resends"),
        },
    )

    @classmethod
    def all(cls) -> list[Transition]:
        return [v for v in vars(cls).values() if isinstance(v, Transition)]


def ambiguous(policy: AmbiguityPolicy) -> Transition:
    return T.ambiguous_resend if policy is AmbiguityPolicy.RESEND else T.ambiguous_assume_sent


def lease_expired(policy: AmbiguityPolicy) -> Transition:
    if policy is AmbiguityPolicy.RESEND:
        return T.lease_expired_resend
    return T.lease_expired_assume_sent


# -- the rules at accept -----------------------------------------------------------


def next_occurrence(
    seen: tuple[int, datetime] | None, now: datetime, dedup_window: timedelta
) -> int | None:
    """Which occurrence of a notification key this arrival is; None for a copy.

    ``seen`` is (the latest occurrence, when it began). A copy inside the dedup
    window (an Alertmanager retry, the other replica of an HA pair) is dropped;
    the same content after the window is a ``repeat_interval`` reminder: the
    next occurrence, delivered again.
    """
    if seen is None:
        return 1
    occurrence, began = seen
    if began <= now - dedup_window:
        return occurrence + 1
    return None


@dataclass(frozen=True, slots=True)
class Initial:
    """What a new delivery row starts as."""

    state: DeliveryState
    reason: Reason | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


def initial(acked_by: str | None) -> Initial:
    """A reminder of a notification acked in that chat is suppressed until it changes."""
    if acked_by is None:
        return Initial(DeliveryState.QUEUED)
    return Initial(DeliveryState.SUPPRESSED, Reason.ACKED, f"acked by {acked_by}")


# -- threads -------------------------------------------------------------------------


class ThreadChange(enum.Enum):
    NONE = "none"
    OPEN = "open"  # a stand-alone message of a group: it becomes the thread's anchor
    OPEN_CLOSED = "open_closed"  # a stand-alone message that already resolves its group
    CLOSE = "close"  # a reply that resolves the group: later news starts a new thread


def thread_change(
    group_ref: uuid.UUID | None, reply_to: int | None, resolves_group: bool
) -> ThreadChange:
    """What a delivered message does to its group's thread in its chat."""
    if group_ref is None:
        return ThreadChange.NONE  # a digest is nobody's thread
    if reply_to is None:
        return ThreadChange.OPEN_CLOSED if resolves_group else ThreadChange.OPEN
    return ThreadChange.CLOSE if resolves_group else ThreadChange.NONE


@dataclass(frozen=True, slots=True)
class FoldedRow:
    """A waiting delivery a storm digest takes in."""

    id: int
    group_ref: uuid.UUID | None
    resolves_group: bool


def threads_closed_by_digest(
    folded: Iterable[FoldedRow], *, carrier: Delivery | None = None
) -> set[uuid.UUID]:
    """A digest that swallows a group's resolution closes that group's thread: the
    resolution will never be sent as a reply, so the next firing starts afresh. The
    carrier's own resolution is swallowed too: the digest goes in its place."""
    swallowed = list(folded)
    if carrier is not None:
        swallowed.append(FoldedRow(carrier.id, carrier.group_ref, carrier.resolves_group))
    return {row.group_ref for row in swallowed if row.resolves_group and row.group_ref is not None}


# -- a claimed delivery ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery: what the worker needs to send one message."""

    id: int
    chat_id: int
    thread_id: int | None
    silent: bool
    text: str
    #: Attempts written so far; ``begin_send`` counts the next one.
    attempts: int
    plain_text: bool = False
    # The alert group this belongs to, and its open thread in this chat.
    group_ref: uuid.UUID | None = None
    resolves_group: bool = False
    anchor_message_id: int | None = None
    # For logs and the webhook-to-delivered latency.
    group_key: str = ""
    accepted_at: datetime | None = None
    # How many other deliveries wait for the same chat and topic (counted up
    # to the storm digest's threshold): a chat far behind gets a digest.
    backlog: int = 0
    # A storm digest: how many waiting deliveries this one carries.
    coalesced: int = 0
    # A producer's own message: sent as written, never carries nor joins a storm
    # digest, no alert buttons; its own URL buttons (JSON rows of {text, url}).
    own_message: bool = False
    buttons: str | None = None
    disable_link_preview: bool = False
    #: Claimed with its request begun (T.claim_and_begin): ``attempts`` counts it.
    written: bool = False

    @property
    def foldable(self) -> bool:
        return not self.own_message

    @property
    def thread_group(self) -> uuid.UUID | None:
        """The group whose thread this message belongs to. A producer's own message
        has a group only as its ordering line (its producer's, per chat): it opens,
        joins and closes no thread."""
        return None if self.own_message else self.group_ref


#: The columns a claim returns, in the order both stores select them.
CLAIMED_COLUMNS = (
    "id",
    "send_started_at",
    "chat_id",
    "thread_id",
    "silent",
    "text",
    "attempts",
    "plain_text",
    "group_ref",
    "resolves_group",
    "created_at",
    "notification_key",
    "own_message",
    "buttons",
    "disable_link_preview",
)


def delivery_from_row(
    row: Mapping[str, Any], *, anchor: int | None, group_key: str, backlog: int = 0
) -> Delivery:
    """One row mapper for both stores: SQLite's integers, text and epoch seconds
    become the same Python values as PostgreSQL's booleans, UUIDs and timestamps."""
    return Delivery(
        id=int(row["id"]),
        chat_id=int(row["chat_id"]),
        thread_id=row["thread_id"],
        silent=bool(row["silent"]),
        text=row["text"],
        attempts=int(row["attempts"]),
        plain_text=bool(row["plain_text"]),
        group_ref=as_uuid(row["group_ref"]),
        resolves_group=bool(row["resolves_group"]),
        anchor_message_id=anchor,
        group_key=group_key,
        accepted_at=as_datetime(row["created_at"]),
        backlog=int(backlog),
        own_message=bool(row["own_message"]),
        buttons=row["buttons"],
        disable_link_preview=bool(row["disable_link_preview"]),
        written=row["send_started_at"] is not None,
    )


def digest_carrier(carrier: Delivery, text: str, folded: int) -> Delivery:
    """The carrier of a storm digest: the digest's text, stand-alone, in nobody's thread."""
    return replace(
        carrier,
        text=text,
        group_ref=None,
        resolves_group=False,
        anchor_message_id=None,
        plain_text=False,
        coalesced=folded,
    )


def as_uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value)


def as_datetime(value: datetime | float | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value, UTC)
