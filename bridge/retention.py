"""What may be deleted, and when: the retention rule, written once. Pure.

A row goes once nothing can need it again, never earlier:

* a delivery: finished (``TERMINAL``) longer than ``retention`` ago, not the
  digest another row points at, and not what a thread that is still open
  shows: its first message and the latest reply after it (older replies of an
  open thread go, or a group that never resolves would keep every one), and
  not one whose receipt is still being sent (``receipts.give_up_after`` bounds
  that wait); its receipts go with it;
* an event of no delivery in the outbox (``recipient.linked``): sent or given
  up longer than ``retention`` ago;
* a notification: none of its deliveries left, and its last occurrence older
  than both ``retention`` and the dedup window (a copy arriving later must
  still find it and be dropped); its acks go with it;
* a group thread: closed longer than ``retention`` ago (an open one is kept);
* a seen Telegram update: received longer than ``retention`` ago;
* a silence made from Telegram: ended longer than ``retention`` ago. A
  delivery it names may go first: the silence then names none;
* a recipient link token: expired (it can never be used again; a used one
  is deleted when used);
* a recipient: not linked (never, or /stop) and unchanged for longer than
  ``retention``, with no link token pending. A linked one stays until /stop.

The stores translate this into SQL (``bridge/store/sql.py``) and delete in
batches of at most ``PRUNE_BATCH`` rows per table, so a batch never holds a
lock long enough for the receiver to notice. Another table joins by adding a
member to ``Table`` and its horizon here, and its statement to the stores.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from bridge.delivery import TERMINAL

#: Rows per table per statement: small enough that a batch's locks are gone in
#: milliseconds, large enough to keep up with hundreds of deliveries a second.
PRUNE_BATCH = 500
#: Batches in one scheduler pass; a backlog carries on at the next tick.
PRUNE_BATCHES_PER_PASS = 10
#: How often the pruner runs: nothing outlives its retention by more than this
#: (plus the time a pass takes).
PRUNE_EVERY = timedelta(seconds=30)

#: What a delivery must be in to be deleted: finished.
PRUNABLE_STATES = TERMINAL


class Table(enum.StrEnum):
    DELIVERIES = "deliveries"
    NOTIFICATIONS = "notifications"
    ACKS = "acks"
    PRODUCER_MESSAGES = "producer_messages"
    GROUP_THREADS = "group_threads"
    TELEGRAM_UPDATES = "telegram_updates"
    BOT_SILENCES = "bot_silences"
    #: Producers' receipts (the outbox): a delivery's go with it; an event of no
    #: delivery (recipient.linked) once sent or given up longer than retention ago.
    RECEIPTS = "receipts"
    RECIPIENT_LINKS = "recipient_links"
    RECIPIENTS = "recipients"


@dataclass(frozen=True, slots=True)
class Horizon:
    """How long a row outlives the moment it stopped mattering, by kind."""

    #: Deliveries after ``finished_at``, threads after ``closed_at``, Telegram
    #: updates after ``received_at``, silences after ``ends_at``.
    finished: timedelta
    #: Notifications after their last ``occurrence_at``: also every window in
    #: which a copy must still be recognised.
    notifications: timedelta


def horizon(retention: timedelta, *, dedup_windows: Iterable[timedelta]) -> Horizon:
    """The horizons for ``retention``, never shorter than a dedup decision needs."""
    return Horizon(
        finished=retention,
        notifications=max([retention, *dedup_windows]),
    )


def too_short(retention: timedelta, windows: dict[str, timedelta]) -> str | None:
    """Why ``retention`` is refused: shorter than a window whose decisions need the rows."""
    for name, window in windows.items():
        if retention < window:
            return (
                f"retention ({retention}) must be at least {name} ({window}): "
                "the rows a duplicate is recognised by would be deleted inside it"
            )
    return None


def batches_left(counts: dict[Table, int], limit: int) -> bool:
    """Whether a pass should run another batch: some table deleted a full one."""
    return any(n >= limit for n in counts.values())
