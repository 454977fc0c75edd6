"""What the rest of the bridge needs of a store: PostgreSQL and SQLite alike.

The contract tests (tests/contract/test_store.py) run the same spec against
both implementations.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Protocol

from bridge.models import Delivery, DeliveryState, Notification


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

    # -- work --------------------------------------------------------------------

    async def claim(self, delivery_id: int, *, lease: timedelta) -> Delivery | None: ...

    async def coalesce(self, carrier: Delivery, *, threshold: int) -> Delivery | None: ...

    async def postpone(self, delivery_id: int, delay: timedelta) -> bool: ...

    async def defer(self, delivery_id: int, *, republish_after: timedelta) -> bool: ...

    async def mark_delivered(
        self, delivery_id: int, message_id: int, *, plain_text: bool, reply_to: int | None
    ) -> bool: ...

    async def mark_retry(self, delivery_id: int, *, delay: timedelta, error: str) -> bool: ...

    async def mark_failed(self, delivery_id: int, *, error: str) -> bool: ...

    async def mark_ambiguous(self, delivery_id: int, *, error: str, resend: bool) -> bool: ...

    async def follow_migration(
        self, delivery_id: int, old_chat_id: int, new_chat_id: int
    ) -> bool: ...

    # -- the scheduler and the shards ---------------------------------------------

    async def take_due(
        self, *, limit: int, republish_after: timedelta, catch_up: bool = False
    ) -> list[tuple[int, int]]: ...

    async def expire_leases(self, *, resend: bool) -> list[int]: ...

    async def heartbeat(self, worker_id: str, *, ttl: timedelta) -> list[str]: ...

    async def leave(self, worker_id: str) -> None: ...

    # -- what operators see ---------------------------------------------------------

    async def backlog(self) -> tuple[int, float]: ...

    async def state_counts(self) -> dict[DeliveryState, int]: ...
