"""The standalone store: one SQLite file, one process, the same contract as PostgreSQL.

Every method is one transaction on one connection, run in one thread of its
own: SQLite allows one writer, and a single connection makes every write
strictly ordered, so what PostgreSQL needs ``FOR UPDATE SKIP LOCKED`` for
needs nothing here. A second bridge on the same file is refused at open
(a lock file beside it), because two would both think they own every chat;
an operator's command is let in beside it (``open_for_operator``).

WAL mode lets readers run beside the writer, and ``synchronous=FULL`` makes a
committed accept survive a power cut: the 200 Alertmanager gets means the
alert is on disk. The bridge keeps a second, read-only connection in a thread
of its own for the producers' status lookups (``_read``): they see every
commit made before they begin, and no longer wait in line behind writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import functools
import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TypeVar

from bridge.delivery import (
    CLAIMED_COLUMNS,
    UNFINISHED,
    WAITING,
    AmbiguityPolicy,
    Delivery,
    DeliveryState,
    FoldedRow,
    Guard,
    T,
    ThreadChange,
    Transition,
    as_datetime,
    as_uuid,
    delivery_from_row,
    digest_carrier,
    initial,
    lease_expired,
    next_occurrence,
    threads_closed_by_digest,
)
from bridge.digest import DigestItem
from bridge.errors import StoreUnavailable
from bridge.models import Notification, Status
from bridge.receipts import Receipt
from bridge.retention import Horizon, Table
from bridge.store.base import (
    MESSAGE_DELIVERY_COLUMNS,
    RECORD_COLUMNS,
    Accepted,
    AlertMessage,
    BotSilence,
    DeliveryQuery,
    DeliveryRecord,
    DigestRenderer,
    ExpiredLease,
    ExpiredWait,
    MessageAccepted,
    MessageOutcome,
    MessageWait,
    NewDelivery,
    NewEvent,
    NewMessage,
    RecipientLinked,
    RecipientState,
    StoredMessage,
    ThreadAnchor,
    event_params,
    linked_event,
    message_delivery_from_row,
    migrations,
    receipt_from_row,
    record_from_row,
    resolve_waiting,
)
from bridge.store.sql import (
    PENDING_RECEIPTS,
    RECEIPT_COLUMNS,
    SQLITE,
    claim_receipts,
    expired_wait_receipts,
    find_deliveries,
    insert_event,
    prunable_deliveries,
    prunable_notifications,
    prune_bot_silences,
    prune_event_receipts,
    prune_group_threads,
    prune_recipient_links,
    prune_recipients,
    prune_telegram_updates,
    receipt_not_taken,
    receipt_rows,
    receipt_sent,
    states,
    update,
    where_clause,
)

log = logging.getLogger(__name__)

R = TypeVar("R")
Transaction = Callable[[sqlite3.Connection, float], R]
#: The store's clock, in Unix seconds: the wall clock, or a test's fake one.
Clock = Callable[[], float]


class StoreInUse(StoreUnavailable):
    """Another process holds the SQLite file."""


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# SQLite's primary result codes that mean the file, not a query, is the
# trouble, and that a retry can cure: another connection holds a lock, the
# disk is full or failing, memory ran out, the file cannot be opened or
# written right now. These become StoreUnavailable (HTTP 503, so Alertmanager
# retries; the worker waits). Anything else (SQLITE_ERROR, SQLITE_CONSTRAINT,
# SQLITE_CORRUPT, ...) is a bug or damage that waiting does not mend.
_RETRYABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def unavailable(exc: BaseException) -> bool:
    """Whether a sqlite3 error is one a retry can cure; decided by SQLite's result code.

    ``sqlite_errorcode`` is the extended code (SQLITE_IOERR_FSYNC, ...); its
    low byte is the primary code. An error sqlite3 raises itself, with no
    code from SQLite (a closed connection, a misuse), is not retryable.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _RETRYABLE_CODES


_CLAIM = {
    begin: update(
        T.claim_and_begin if begin else T.claim, SQLITE, returning=", ".join(CLAIMED_COLUMNS)
    )
    for begin in (False, True)
}

_PRUNABLE_DELIVERIES = prunable_deliveries(SQLITE)
_PRUNABLE_NOTIFICATIONS = prunable_notifications(SQLITE)
_PRUNE_BY_DELETE = {
    Table.GROUP_THREADS: prune_group_threads(SQLITE),
    Table.TELEGRAM_UPDATES: prune_telegram_updates(SQLITE),
    Table.BOT_SILENCES: prune_bot_silences(SQLITE),
    Table.RECIPIENT_LINKS: prune_recipient_links(SQLITE),
    Table.RECIPIENTS: prune_recipients(SQLITE),
}
_PRUNE_EVENT_RECEIPTS = prune_event_receipts(SQLITE)

#: The receipts of the rows a finishing transition changed (ids in :moved, JSON),
#: the statement after the UPDATE in the same transaction.
_RECEIPT_ROWS = receipt_rows(
    SQLITE, source="deliveries d", where="d.id IN (SELECT value FROM json_each(:moved))"
)
_INSERT_EVENT = insert_event(SQLITE)
_EXPIRED_WAIT_RECEIPTS = expired_wait_receipts(
    SQLITE, source="waiting_messages w", where="w.id IN (SELECT value FROM json_each(:gone))"
)
_CLAIM_RECEIPTS = claim_receipts(SQLITE)
_RECEIPT_SENT = receipt_sent(SQLITE)
_RECEIPT_NOT_TAKEN = {
    give_up: receipt_not_taken(SQLITE, give_up=give_up) for give_up in (False, True)
}

#: On the partial index deliveries_resent: the scheduler reads it every pass.
_RESENDS = "SELECT COALESCE(sum(operator_resends), 0) FROM deliveries WHERE operator_resends > 0"

# What a storm digest for the carrier's chat, topic and id (in that order) takes in.
_FOLDABLE = where_clause(
    T.digested,
    SQLITE,
    row="d.chat_id = ? AND COALESCE(d.thread_id, 0) = COALESCE(?, 0) AND d.id <> ?",
)


class SqliteStore:
    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        lock: IO[str] | None,
        clock: Clock,
        *,
        read_only: bool = False,
        reader: sqlite3.Connection | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._db = connection
        self._lock = lock
        # A read-only connection cannot take the write lock BEGIN IMMEDIATE asks for.
        self._begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        # One thread: sqlite3 connections are not to be shared across threads,
        # and one writer is what SQLite allows anyway.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # Pure reads (``_read``) on a read-only connection, in a thread of their own.
        self._reader = reader
        self._reader_thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
            if reader is not None
            else None
        )

    @classmethod
    async def open(cls, path: str | Path, *, clock: Clock = time.time) -> SqliteStore:
        path = Path(path)
        lock = _take_lock(path)
        try:
            connection = await asyncio.to_thread(_connect, path)
        except BaseException:
            lock.close()
            raise
        try:
            # After _connect: the file exists, in WAL mode, which a read-only
            # connection cannot switch it to.
            reader = await asyncio.to_thread(_connect_operator, path, False)
        except BaseException:
            connection.close()
            lock.close()
            raise
        return cls(path, connection, lock, clock, reader=reader)

    @classmethod
    async def open_for_operator(
        cls, path: str | Path, *, write: bool = False, clock: Clock = time.time
    ) -> SqliteStore:
        """The file as ``alertbridge deliveries`` opens it: beside the running bridge,
        without its lock.

        The lock keeps out a second *bridge*, which would think it owns every chat
        and send alongside the first. An operator's command is not one: it reads
        (``write=False``: a read-only connection, which WAL lets run beside the
        writer and which cannot change a row), or runs one short write transaction
        (a resend: T.operator_resend on a finished row, which no worker holds).
        SQLite serialises that write with the bridge's own (``busy_timeout``
        waits out the bridge's transaction; each is short), and the bridge's
        scheduler then finds the row due and publishes it, as it would a retry.
        Never migrates, never creates the file.
        """
        path = Path(path)
        if not path.is_file():
            raise StoreUnavailable(
                f"no SQLite store at {path}; check sqlite_path (or ALERTBRIDGE_SQLITE_PATH)"
            )
        connection = await asyncio.to_thread(_connect_operator, path, write)
        return cls(path, connection, None, clock, read_only=not write)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reader is not None and self._reader_thread is not None:
            await loop.run_in_executor(self._reader_thread, self._reader.close)
            self._reader_thread.shutdown(wait=True)
        await loop.run_in_executor(self._thread, self._db.close)
        self._thread.shutdown(wait=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock

    async def _run(self, transaction: Transaction[R]) -> R:
        """Run ``transaction`` in the store's thread, inside BEGIN IMMEDIATE ... COMMIT."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._transaction, self._db, self._begin, transaction
        )

    async def _read(self, transaction: Transaction[R]) -> R:
        """Run ``transaction``, which only reads, on the read-only connection in its
        own thread: a status lookup does not wait behind every write queued before
        it. Inside BEGIN ... COMMIT, so its statements read one snapshot, which
        holds every commit made before it began (WAL). Without a reader (an
        operator's store), on the one connection."""
        if self._reader is None or self._reader_thread is None:
            return await self._run(transaction)
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_thread, self._transaction, self._reader, "BEGIN", transaction
        )

    def _transaction(self, db: sqlite3.Connection, begin: str, transaction: Transaction[R]) -> R:
        """``transaction`` between ``begin`` and COMMIT on ``db``, in the calling thread."""
        now = self._clock()
        try:
            db.execute(begin)
            try:
                result = transaction(db, now)
                db.execute("COMMIT")
            except BaseException:
                # SQLITE_FULL, SQLITE_IOERR and others roll back by themselves;
                # a failed COMMIT does not, and would block every later BEGIN.
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            if not unavailable(exc):
                raise  # a bug in a query, not the file's state
            raise StoreUnavailable(
                f"SQLite store {self.path}: {exc} ({exc.sqlite_errorname}); "
                "check the disk and the file's permissions"
            ) from exc

    # -- schema ---------------------------------------------------------------

    async def migrate(self) -> list[str]:
        def apply(db: sqlite3.Connection, now: float) -> list[str]:
            db.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"""
            )
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            applied = []
            for version, name, sql in migrations("sqlite_migrations"):
                if version in done:
                    continue
                # executescript would COMMIT first; one statement at a time
                # keeps the migration inside this transaction.
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, now))
                log.info("applied migration %s", name)
                applied.append(name)
            return applied

        return await self._run(apply)

    async def pending_migrations(self) -> list[str]:
        def pending(db: sqlite3.Connection, now: float) -> list[str]:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            done = (
                {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
                if exists
                else set()
            )
            return [
                name for version, name, _ in migrations("sqlite_migrations") if version not in done
            ]

        return await self._run(pending)

    async def ping(self) -> None:
        await self._run(lambda db, now: db.execute("SELECT 1").fetchone())

    @contextlib.asynccontextmanager
    async def poller_lock(self) -> AsyncIterator[bool]:
        """The bot's one poller: the process that holds the file is the only one."""
        yield True

    def interactions(self) -> SqliteInteractions:
        return SqliteInteractions(self)

    # -- receive --------------------------------------------------------------

    async def accept(
        self,
        key: uuid.UUID,
        group: uuid.UUID,
        notification: Notification,
        deliveries: Sequence[NewDelivery],
        *,
        dedup_window: timedelta,
        republish_after: timedelta,
    ) -> Accepted:
        def accept(db: sqlite3.Connection, now: float) -> Accepted:
            row = db.execute(
                "SELECT occurrence, occurrence_at FROM notifications WHERE key = ?", (str(key),)
            ).fetchone()
            seen = None if row is None else (row[0], _when(row[1]))
            occurrence = next_occurrence(seen, _when(now), dedup_window)
            if occurrence is None:
                return Accepted(occurrence=None, deliveries=[])
            db.execute(
                """INSERT INTO notifications
                       (key, occurrence, occurrence_at, source, receiver, group_key, status,
                        common_labels, external_url, alert_count)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (key) DO UPDATE
                       SET occurrence = excluded.occurrence,
                           occurrence_at = excluded.occurrence_at""",
                (
                    str(key),
                    occurrence,
                    now,
                    notification.source,
                    notification.receiver,
                    notification.group_key,
                    notification.status.value,
                    json.dumps(dict(notification.common_labels)),
                    notification.external_url,
                    len(notification.alerts) + notification.truncated_alerts,
                ),
            )
            queued: list[tuple[int, int]] = []
            suppressed = 0
            for d in deliveries:
                moved = db.execute(
                    "SELECT new_chat_id FROM chat_migrations WHERE old_chat_id = ?", (d.chat_id,)
                ).fetchone()
                chat_id = moved[0] if moved else d.chat_id
                acked = db.execute(
                    "SELECT user_name FROM acks WHERE notification_key = ? AND chat_id = ?",
                    (str(key), chat_id),
                ).fetchone()
                start = initial(acked[0] if acked else None)
                inserted = db.execute(
                    """INSERT INTO deliveries
                           (notification_key, occurrence, chat_id, thread_id, silent, template,
                            text, created_at, next_attempt_at, republish_at, group_ref,
                            resolves_group, state, finished_at, reason, last_error)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT DO NOTHING
                       RETURNING id""",
                    (
                        str(key),
                        occurrence,
                        chat_id,
                        d.thread_id,
                        d.silent,
                        d.template,
                        d.text,
                        now,
                        now,
                        now + _seconds(republish_after),
                        str(group),
                        notification.status is Status.RESOLVED,
                        start.state.value,
                        now if start.finished else None,
                        start.reason,
                        start.error,
                    ),
                ).fetchone()
                if inserted is None:
                    continue
                if start.finished:
                    suppressed += 1
                else:
                    queued.append((inserted[0], chat_id))
            return Accepted(occurrence=occurrence, deliveries=queued, suppressed=suppressed)

        return await self._run(accept)

    async def accept_messages(
        self, messages: Sequence[NewMessage], *, republish_after: timedelta
    ) -> list[MessageAccepted]:
        def accept(db: sqlite3.Connection, now: float) -> list[MessageAccepted]:
            results: list[MessageAccepted] = []
            for given in messages:
                # One writer at a time: the recipient read here is as the link left it.
                m = resolve_waiting(given, _linked_chats(db, given))
                new = db.execute(
                    """INSERT INTO notifications
                           (key, occurrence, occurrence_at, source, receiver, group_key,
                            status, alert_count)
                       VALUES (?, 1, ?, ?, ?, ?, 'firing', 0)
                       ON CONFLICT (key) DO NOTHING
                       RETURNING key""",
                    (str(m.key), now, f"producer:{m.producer}", m.producer, m.message_id),
                ).fetchone()
                if new is not None:
                    db.execute(
                        """INSERT INTO producer_messages
                               (key, producer, message_id, request_hash, request, created_at,
                                receipts)
                           VALUES (?, ?, ?, ?, ?, ?, ?)""",
                        (
                            str(m.key),
                            m.producer,
                            m.message_id,
                            m.request_hash,
                            m.request,
                            now,
                            m.receipts,
                        ),
                    )
                    if m.waiting is not None:
                        w = m.waiting
                        db.execute(
                            """INSERT INTO waiting_messages
                                   (key, producer, recipient, thread_id, silent, text, buttons,
                                    disable_link_preview, group_ref, expires_at)
                               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                            (
                                str(m.key),
                                m.producer,
                                w.recipient,
                                w.thread_id,
                                w.silent,
                                w.text,
                                m.buttons,
                                m.disable_link_preview,
                                None if m.line is None else str(m.line),
                                now + _seconds(w.expires_after),
                            ),
                        )
                    for d in m.deliveries:
                        moved = db.execute(
                            "SELECT new_chat_id FROM chat_migrations WHERE old_chat_id = ?",
                            (d.chat_id,),
                        ).fetchone()
                        db.execute(
                            """INSERT INTO deliveries
                                   (notification_key, occurrence, chat_id, thread_id, silent,
                                    template, text, own_message, buttons,
                                    disable_link_preview, created_at, next_attempt_at,
                                    republish_at, group_ref)
                               VALUES (?, 1, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)
                               ON CONFLICT DO NOTHING""",
                            (
                                str(m.key),
                                moved[0] if moved else d.chat_id,
                                d.thread_id,
                                d.silent,
                                d.template,
                                d.text,
                                m.buttons,
                                m.disable_link_preview,
                                now,
                                now,
                                now + _seconds(republish_after),
                                None if m.line is None else str(m.line),
                            ),
                        )
                stored = _stored_message(db, "p.key = ?", (str(m.key),))
                assert stored is not None  # inserted above, or before
                if new is not None:
                    outcome = MessageOutcome.ACCEPTED
                elif stored.request_hash == m.request_hash:
                    outcome = MessageOutcome.REPLAYED
                else:
                    outcome = MessageOutcome.CONFLICT
                results.append(MessageAccepted(outcome, stored))
            return results

        return await self._run(accept)

    async def stored_message(self, producer: str, message_id: str) -> StoredMessage | None:
        return await self._read(
            lambda db, now: _stored_message(
                db, "p.producer = ? AND p.message_id = ?", (producer, message_id)
            )
        )

    # -- recipients -------------------------------------------------------------

    async def create_link(
        self, producer: str, recipient: str, token_hash: str, *, ttl: timedelta
    ) -> datetime:
        def create(db: sqlite3.Connection, now: float) -> datetime:
            expires_at = now + _seconds(ttl)
            db.execute(
                """INSERT INTO recipient_links
                       (token_hash, producer, recipient, created_at, expires_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (token_hash, producer, recipient, now, expires_at),
            )
            db.execute(
                """INSERT INTO recipients (producer, recipient, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT (producer, recipient)
                   DO UPDATE SET updated_at = excluded.updated_at""",
                (producer, recipient, now),
            )
            return datetime.fromtimestamp(expires_at, UTC)

        return await self._run(create)

    async def recipient(self, producer: str, recipient: str) -> RecipientState | None:
        def find(db: sqlite3.Connection, now: float) -> RecipientState | None:
            row = db.execute(
                """SELECT chat_id, linked_at FROM recipients
                   WHERE producer = ? AND recipient = ?""",
                (producer, recipient),
            ).fetchone()
            if row is None:
                return None
            return RecipientState(producer, recipient, row[0], as_datetime(row[1]))

        return await self._read(find)

    async def recipient_chats(self, producer: str, recipients: Sequence[str]) -> dict[str, int]:
        def find(db: sqlite3.Connection, now: float) -> dict[str, int]:
            rows = db.execute(
                """SELECT recipient, chat_id FROM recipients
                   WHERE producer = ? AND chat_id IS NOT NULL
                     AND recipient IN (SELECT value FROM json_each(?))""",
                (producer, json.dumps(list(recipients))),
            )
            return {r[0]: int(r[1]) for r in rows}

        return await self._run(find) if recipients else {}

    # -- worker ---------------------------------------------------------------

    async def claim(
        self, delivery_id: int, *, lease: timedelta, backlog_up_to: int = 0, begin: bool = False
    ) -> Delivery | None:
        """T.claim (T.claim_and_begin with ``begin``), and the row's open thread anchor,
        group key and the chat's backlog."""
        sql = _CLAIM[begin]

        def claim(db: sqlite3.Connection, now: float) -> Delivery | None:
            row = db.execute(sql, _params(now, id=delivery_id, lease=lease)).fetchone()
            if row is None:
                return None
            group_key = db.execute(
                "SELECT group_key FROM notifications WHERE key = ?", (row["notification_key"],)
            ).fetchone()[0]
            anchor = db.execute(
                """SELECT message_id FROM group_threads
                   WHERE group_ref = ? AND chat_id = ? AND thread_key = COALESCE(?, 0)
                     AND closed_at IS NULL""",
                (row["group_ref"], row["chat_id"], row["thread_id"]),
            ).fetchone()
            backlog = db.execute(
                f"""SELECT count(*) FROM (
                        SELECT 1 FROM deliveries
                        WHERE chat_id = ? AND COALESCE(thread_id, 0) = COALESCE(?, 0)
                          AND state IN {states(WAITING)} AND id <> ?
                        LIMIT ?)""",
                (row["chat_id"], row["thread_id"], row["id"], backlog_up_to),
            ).fetchone()[0]
            return delivery_from_row(
                row, anchor=anchor[0] if anchor else None, group_key=group_key, backlog=backlog
            )

        return await self._run(claim)

    async def apply(self, transition: Transition, delivery_id: int, **params: object) -> bool:
        """Run one transition on one row; one that finishes it wakes the next in line."""
        sql = _statement(transition)

        def apply(db: sqlite3.Connection, now: float) -> bool:
            done = db.execute(sql, _params(now, **params, id=delivery_id)).fetchone()
            if done is None:
                return False
            _write_receipts(db, now, transition, [done["id"]])
            if transition.releases_group:
                _wake_next(db, now, done)
            return True

        return await self._run(apply)

    async def mark_delivered(
        self,
        delivery_id: int,
        message_id: int,
        *,
        plain_text: bool,
        reply_to: int | None,
        thread: ThreadChange,
    ) -> bool:
        """T.delivered, and ``thread`` applied to the group's thread."""
        sql = _statement(T.delivered)
        params = {"message_id": message_id, "plain_text": plain_text, "reply_to": reply_to}

        def delivered(db: sqlite3.Connection, now: float) -> bool:
            done = db.execute(sql, _params(now, **params, id=delivery_id)).fetchone()
            if done is None:
                return False
            _write_receipts(db, now, T.delivered, [done["id"]])
            keys = (done["group_ref"], done["chat_id"], done["thread_key"])
            if thread in (ThreadChange.OPEN, ThreadChange.OPEN_CLOSED):
                closed = now if thread is ThreadChange.OPEN_CLOSED else None
                db.execute(
                    """INSERT INTO group_threads
                           (group_ref, chat_id, thread_key, message_id, opened_at, closed_at)
                       VALUES (?, ?, ?, ?, ?, ?)
                       ON CONFLICT (group_ref, chat_id, thread_key) DO UPDATE
                           SET message_id = excluded.message_id, opened_at = excluded.opened_at,
                               closed_at = excluded.closed_at""",
                    (*keys, message_id, now, closed),
                )
            elif thread is ThreadChange.CLOSE:
                db.execute(
                    """UPDATE group_threads SET closed_at = ?
                       WHERE group_ref = ? AND chat_id = ? AND thread_key = ?""",
                    (now, *keys),
                )
            _wake_next(db, now, done)
            return True

        return await self._run(delivered)

    async def follow_migration(
        self, delivery_id: int, old_chat_id: int, new_chat_id: int, *, error: str
    ) -> bool:
        """T.migrated; remember the chat's new id for every later delivery."""
        sql = update(T.migrated, SQLITE)

        def follow(db: sqlite3.Connection, now: float) -> bool:
            db.execute(
                """INSERT INTO chat_migrations (old_chat_id, new_chat_id, migrated_at)
                   VALUES (?, ?, ?)
                   ON CONFLICT (old_chat_id) DO UPDATE SET new_chat_id = excluded.new_chat_id""",
                (old_chat_id, new_chat_id, now),
            )
            params = _params(now, id=delivery_id, new_chat_id=new_chat_id, error=error)
            moved = db.execute(sql, params).fetchone() is not None
            waiting = states(WAITING)
            db.execute(
                f"UPDATE deliveries SET chat_id = ? WHERE chat_id = ? AND state IN {waiting}",
                (new_chat_id, old_chat_id),
            )
            return moved

        return await self._run(follow)

    async def coalesce(
        self, carrier: Delivery, *, threshold: int, render: DigestRenderer
    ) -> Delivery | None:
        """A storm: fold what waits for the carrier's chat and topic into one digest."""

        def coalesce(db: sqlite3.Connection, now: float) -> tuple[str, int] | None:
            waiting = [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM deliveries d WHERE {_FOLDABLE} ORDER BY id",
                    (carrier.chat_id, carrier.thread_id, carrier.id),
                )
            ]
            if len(waiting) < threshold:
                return None
            marks = ",".join(str(int(i)) for i in waiting)
            params = _params(now, digest_id=carrier.id, error=f"in storm digest {carrier.id}")
            folded = db.execute(
                update(
                    T.digested,
                    SQLITE,
                    row=f"d.id IN ({marks})",
                    returning="id, group_ref, resolves_group",
                ),
                params,
            ).fetchall()
            _write_receipts(db, now, T.digested, [r["id"] for r in folded])
            ids = ",".join(str(int(r["id"])) for r in folded)
            rows = db.execute(
                f"""SELECT n.status, n.alert_count, n.common_labels
                    FROM deliveries d JOIN notifications n ON n.key = d.notification_key
                    WHERE d.id IN ({ids}, ?) ORDER BY d.id = ?, d.id""",
                (carrier.id, carrier.id),
            ).fetchall()
            text = render([DigestItem(r[0], r[1], json.loads(r[2])) for r in rows])
            closed = threads_closed_by_digest(
                [
                    FoldedRow(r["id"], as_uuid(r["group_ref"]), bool(r["resolves_group"]))
                    for r in folded
                ],
                carrier=carrier,
            )
            db.executemany(
                """UPDATE group_threads SET closed_at = ?
                   WHERE group_ref = ? AND chat_id = ? AND thread_key = COALESCE(?, 0)
                     AND closed_at IS NULL""",
                [(now, str(ref), carrier.chat_id, carrier.thread_id) for ref in closed],
            )
            # What waited behind a folded row in its group's line may go now.
            db.execute(
                f"""UPDATE deliveries SET republish_at = ?
                    WHERE chat_id = ? AND COALESCE(thread_id, 0) = COALESCE(?, 0)
                      AND state IN {states(WAITING)} AND republish_at > ?""",
                (now, carrier.chat_id, carrier.thread_id, now),
            )
            # The digest is nobody's thread: it neither replies nor opens one.
            db.execute(
                """UPDATE deliveries SET text = ?, group_ref = NULL, resolves_group = 0,
                                         plain_text = 0
                   WHERE id = ?""",
                (text, carrier.id),
            )
            return text, len(folded)

        folded = await self._run(coalesce)
        if folded is None:
            return None
        return digest_carrier(carrier, *folded)

    # -- the scheduler and the shards -------------------------------------------

    async def take_due(
        self,
        *,
        limit: int,
        republish_after: timedelta,
        catch_up: bool = False,
        after_id: int = 0,
    ) -> list[tuple[int, int]]:
        order = "id" if catch_up else "republish_at"

        def take(db: sqlite3.Connection, now: float) -> list[tuple[int, int]]:
            rows = db.execute(
                f"""SELECT id, chat_id FROM deliveries
                    WHERE state IN {states(WAITING)}
                      AND (republish_at <= :now
                           OR (:catch_up AND next_attempt_at <= :now AND id > :after_id))
                    ORDER BY {order} LIMIT :limit""",
                {"now": now, "catch_up": catch_up, "limit": limit, "after_id": after_id},
            ).fetchall()
            db.executemany(
                "UPDATE deliveries SET republish_at = ? WHERE id = ?",
                [(now + _seconds(republish_after), r[0]) for r in rows],
            )
            return sorted((r[0], r[1]) for r in rows)

        return await self._run(take)

    async def expire_leases(self, *, policy: AmbiguityPolicy) -> list[ExpiredLease]:
        """T.lease_expired_*: before the request was written the row waits again;
        after, it is ambiguous. The deliveries behind it in its group may go."""
        transitions = (T.lease_expired_unwritten, lease_expired(policy))

        def expire(db: sqlite3.Connection, now: float) -> list[ExpiredLease]:
            found = []
            for transition in transitions:
                sql = _statement(transition, row="")
                expired = db.execute(sql, _params(now)).fetchall()
                _write_receipts(db, now, transition, [done["id"] for done in expired])
                for done in expired:
                    if transition.releases_group:
                        _wake_next(db, now, done)
                    written = Guard.WRITTEN in transition.guards
                    found.append(ExpiredLease(done["id"], done["chat_id"], written))
            return found

        return await self._run(expire)

    async def expire_waiting(self, *, limit: int) -> list[ExpiredWait]:
        def expire(db: sqlite3.Connection, now: float) -> list[ExpiredWait]:
            rows = db.execute(
                """SELECT w.id, p.producer, p.message_id, w.recipient
                   FROM waiting_messages w JOIN producer_messages p ON p.key = w.key
                   WHERE w.expired_at IS NULL AND w.expires_at <= ?
                   ORDER BY w.expires_at LIMIT ?""",
                (now, limit),
            ).fetchall()
            gone = json.dumps([r[0] for r in rows])
            db.execute(
                """UPDATE waiting_messages SET expired_at = :now
                   WHERE id IN (SELECT value FROM json_each(:gone))""",
                {"now": now, "gone": gone},
            )
            db.execute(_EXPIRED_WAIT_RECEIPTS, {"now": now, "gone": gone})
            return [ExpiredWait(r[1], r[2], r[3]) for r in sorted(rows, key=lambda r: r[0])]

        return await self._run(expire)

    async def heartbeat(self, worker_id: str, *, ttl: timedelta) -> list[str]:
        def beat(db: sqlite3.Connection, now: float) -> list[str]:
            db.execute(
                """INSERT INTO workers (worker_id, seen_at) VALUES (?, ?)
                   ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at""",
                (worker_id, now),
            )
            db.execute("DELETE FROM workers WHERE seen_at < ?", (now - _seconds(ttl) * 10,))
            rows = db.execute(
                "SELECT worker_id FROM workers WHERE seen_at >= ?", (now - _seconds(ttl),)
            )
            return sorted({r[0] for r in rows} | {worker_id})

        return await self._run(beat)

    async def leave(self, worker_id: str) -> None:
        await self._run(
            lambda db, now: db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
        )

    async def prune(self, horizon: Horizon, *, limit: int) -> dict[Table, int]:
        """One batch of retention (bridge/retention.py): at most ``limit`` rows per table.

        The file does not shrink: SQLite puts the freed pages on its free list and
        the next inserts reuse them, so once deletes keep pace with inserts the file
        stops growing (no auto_vacuum: it would have to be set before the tables
        exist, and returning pages only to take them back costs writes for nothing).
        """

        def prune(db: sqlite3.Connection, now: float) -> dict[Table, int]:
            params = _params(
                now, finished=horizon.finished, notifications=horizon.notifications, limit=limit
            )
            ids = [r[0] for r in db.execute(_PRUNABLE_DELIVERIES, params)]
            chosen = {"chosen": json.dumps(ids)}
            # A silence outlives the message it was made from: it names none then.
            db.execute(
                """UPDATE bot_silences SET delivery_id = NULL
                   WHERE delivery_id IN (SELECT value FROM json_each(:chosen))""",
                chosen,
            )
            # A delivery's receipts go with it, sent or not.
            receipts = db.execute(
                "DELETE FROM receipts WHERE delivery_id IN (SELECT value FROM json_each(:chosen))",
                chosen,
            ).rowcount
            db.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(:chosen))",
                chosen,
            )
            keys = [r[0] for r in db.execute(_PRUNABLE_NOTIFICATIONS, params)]
            chosen = {"chosen": json.dumps(keys)}
            acks = db.execute(
                "DELETE FROM acks WHERE notification_key IN (SELECT value FROM json_each(:chosen))",
                chosen,
            ).rowcount
            # A message that waited in vain: its row goes with the message.
            db.execute(
                "DELETE FROM waiting_messages WHERE key IN (SELECT value FROM json_each(:chosen))",
                chosen,
            )
            # A producer's message_id is remembered as long as its notification.
            remembered = db.execute(
                "DELETE FROM producer_messages WHERE key IN (SELECT value FROM json_each(:chosen))",
                chosen,
            ).rowcount
            db.execute(
                "DELETE FROM notifications WHERE key IN (SELECT value FROM json_each(:chosen))",
                chosen,
            )
            counts = {
                Table.DELIVERIES: len(ids),
                Table.NOTIFICATIONS: len(keys),
                Table.ACKS: acks,
                Table.PRODUCER_MESSAGES: remembered,
            }
            for table, sql in _PRUNE_BY_DELETE.items():
                counts[table] = db.execute(sql, params).rowcount
            # Other events once long finished.
            receipts += db.execute(_PRUNE_EVENT_RECEIPTS, params).rowcount
            counts[Table.RECEIPTS] = receipts
            return counts

        return await self._run(prune)

    # -- what operators see -------------------------------------------------------

    async def backlog(self) -> tuple[int, float]:
        def backlog(db: sqlite3.Connection, now: float) -> tuple[int, float]:
            n, oldest = db.execute(
                f"""SELECT count(*), min(created_at) FROM deliveries
                    WHERE state IN {states(UNFINISHED)}"""
            ).fetchone()
            return int(n), (now - oldest) if oldest is not None else 0.0

        return await self._run(backlog)

    async def state_counts(self) -> dict[DeliveryState, int]:
        def counts(db: sqlite3.Connection, now: float) -> dict[DeliveryState, int]:
            rows = db.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
            return {DeliveryState(state): n for state, n in rows}

        return await self._run(counts)

    async def state_of(self, delivery_id: int) -> DeliveryState | None:
        def state(db: sqlite3.Connection, now: float) -> DeliveryState | None:
            row = db.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            return None if row is None else DeliveryState(row[0])

        return await self._run(state)

    async def find_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        sql, params = find_deliveries(query, SQLITE)

        def find(db: sqlite3.Connection, now: float) -> list[DeliveryRecord]:
            return [record_from_row(r) for r in db.execute(sql, _params(now, **params))]

        return await self._run(find)

    async def delivery(self, delivery_id: int) -> DeliveryRecord | None:
        def one(db: sqlite3.Connection, now: float) -> DeliveryRecord | None:
            row = db.execute(
                f"""SELECT {RECORD_COLUMNS}, g.message_id AS anchor, g.opened_at AS anchor_opened,
                           g.closed_at AS anchor_closed
                    FROM deliveries d JOIN notifications n ON n.key = d.notification_key
                    LEFT JOIN group_threads g
                        ON g.group_ref = d.group_ref AND g.chat_id = d.chat_id
                       AND g.thread_key = COALESCE(d.thread_id, 0)
                    WHERE d.id = ?""",
                (delivery_id,),
            ).fetchone()
            if row is None:
                return None
            thread = None
            if row["anchor"] is not None:
                opened, closed = row["anchor_opened"], row["anchor_closed"]
                thread = ThreadAnchor(
                    row["anchor"], _when(opened), None if closed is None else _when(closed)
                )
            return record_from_row(row, thread)

        return await self._run(one)

    async def operator_resends(self) -> int:
        def total(db: sqlite3.Connection, now: float) -> int:
            return int(db.execute(_RESENDS).fetchone()[0])

        return await self._run(total)

    # -- producers' receipts ------------------------------------------------------

    async def add_event(self, event: NewEvent) -> bool:
        return await self._run(lambda db, now: insert_event_row(db, now, event))

    async def claim_receipts(self, *, limit: int, lease: timedelta) -> list[Receipt]:
        """One connection, one writer: two claims never overlap."""

        def claim(db: sqlite3.Connection, now: float) -> list[Receipt]:
            rows = db.execute(_CLAIM_RECEIPTS, _params(now, limit=limit, lease=lease)).fetchall()
            return sorted((receipt_from_row(r) for r in rows), key=lambda r: r.id)

        return await self._run(claim)

    async def receipt_sent(self, receipt_id: int) -> bool:
        def sent(db: sqlite3.Connection, now: float) -> bool:
            return db.execute(_RECEIPT_SENT, _params(now, id=receipt_id)).rowcount == 1

        return await self._run(sent)

    async def receipt_not_taken(
        self, receipt_id: int, attempts: int, *, error: str, retry_in: timedelta | None
    ) -> bool:
        sql = _RECEIPT_NOT_TAKEN[retry_in is None]
        params = {"id": receipt_id, "attempts": attempts, "error": error}
        if retry_in is not None:
            params["delay"] = retry_in

        def not_taken(db: sqlite3.Connection, now: float) -> bool:
            return db.execute(sql, _params(now, **params)).rowcount == 1

        return await self._run(not_taken)

    async def pending_receipts(self) -> int:
        return await self._run(lambda db, now: int(db.execute(PENDING_RECEIPTS).fetchone()[0]))

    async def receipts(self, producer: str, message_id: str) -> list[Receipt]:
        def find(db: sqlite3.Connection, now: float) -> list[Receipt]:
            rows = db.execute(
                f"""SELECT {RECEIPT_COLUMNS} FROM receipts
                    WHERE producer = ? AND message_id = ? ORDER BY id""",
                (producer, message_id),
            ).fetchall()
            return [receipt_from_row(r) for r in rows]

        return await self._run(find)


class SqliteInteractions:
    """The bot's records (updates seen, acks, silences) in the standalone file."""

    def __init__(self, store: SqliteStore) -> None:
        self._run = store._run

    async def consume_link(
        self, token_hash: str, chat_id: int, *, receipts_for: Collection[str] = ()
    ) -> RecipientLinked | None:
        """One writer at a time (BEGIN IMMEDIATE): the second use finds the token gone."""

        def consume(db: sqlite3.Connection, now: float) -> RecipientLinked | None:
            used = db.execute(
                """DELETE FROM recipient_links WHERE token_hash = ? AND expires_at > ?
                   RETURNING producer, recipient""",
                (token_hash, now),
            ).fetchone()
            if used is None:
                return None
            producer, recipient = used
            before = db.execute(
                "SELECT chat_id FROM recipients WHERE producer = ? AND recipient = ?",
                (producer, recipient),
            ).fetchone()
            db.execute(
                """INSERT INTO recipients (producer, recipient, chat_id, linked_at, updated_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (producer, recipient) DO UPDATE
                   SET chat_id = excluded.chat_id, linked_at = excluded.linked_at,
                       updated_at = excluded.updated_at""",
                (producer, recipient, chat_id, now, now),
            )
            old = before[0] if before is not None else None
            linked = RecipientLinked(
                producer,
                recipient,
                chat_id,
                datetime.fromtimestamp(now, UTC),
                old if old is not None and old != chat_id else None,
                released=_release_waiting(db, now, producer, recipient, chat_id),
            )
            if producer in receipts_for:
                insert_event_row(db, now, linked_event(linked))
            return linked

        return await self._run(consume)

    async def unlink_chat(self, chat_id: int) -> list[RecipientState]:
        def unlink(db: sqlite3.Connection, now: float) -> list[RecipientState]:
            rows = db.execute(
                """SELECT producer, recipient, linked_at FROM recipients WHERE chat_id = ?
                   ORDER BY producer, recipient""",
                (chat_id,),
            ).fetchall()
            db.execute(
                """UPDATE recipients SET chat_id = NULL, linked_at = NULL, updated_at = ?
                   WHERE chat_id = ?""",
                (now, chat_id),
            )
            return [RecipientState(r[0], r[1], chat_id, as_datetime(r[2])) for r in rows]

        return await self._run(unlink)

    async def first_sight(self, update_id: int) -> bool:
        def first(db: sqlite3.Connection, now: float) -> bool:
            cursor = db.execute(
                "INSERT INTO telegram_updates VALUES (?, ?) ON CONFLICT DO NOTHING",
                (update_id, now),
            )
            return cursor.rowcount == 1

        return await self._run(first)

    async def forget_update(self, update_id: int) -> None:
        await self._run(
            lambda db, now: db.execute(
                "DELETE FROM telegram_updates WHERE update_id = ?", (update_id,)
            )
        )

    async def message(self, chat_id: int, message_id: int) -> AlertMessage | None:
        def find(db: sqlite3.Connection, now: float) -> AlertMessage | None:
            # The message (m) shows its own delivery or, as its thread's first
            # message, the latest delivered in the thread (d).
            row = db.execute(
                """SELECT d.id, m.chat_id, m.telegram_message_id, d.notification_key, d.text,
                          n.common_labels, n.status,
                          COALESCE(m.reply_to_message_id, m.telegram_message_id),
                          a.user_name, a.acked_at
                   FROM deliveries m
                   JOIN deliveries d ON d.chat_id = m.chat_id AND d.state = 'delivered'
                        AND (d.id = m.id OR (m.reply_to_message_id IS NULL
                                             AND d.reply_to_message_id = m.telegram_message_id))
                   JOIN notifications n ON n.key = d.notification_key
                   LEFT JOIN acks a ON a.notification_key = d.notification_key
                        AND a.chat_id = d.chat_id
                   WHERE m.chat_id = ? AND m.telegram_message_id = ? AND m.state = 'delivered'
                   ORDER BY d.id DESC
                   LIMIT 1""",
                (chat_id, message_id),
            ).fetchone()
            if row is None:
                return None
            return AlertMessage(
                delivery_id=row[0],
                chat_id=row[1],
                message_id=row[2],
                notification_key=uuid.UUID(row[3]),
                text=row[4],
                common_labels=json.loads(row[5]),
                resolved=row[6] == "resolved",
                anchor_message_id=row[7],
                acked_by=row[8],
                acked_at=None if row[9] is None else datetime.fromtimestamp(row[9], UTC),
            )

        return await self._run(find)

    async def ack(self, message: AlertMessage, user_id: int, user_name: str) -> bool:
        def ack(db: sqlite3.Connection, now: float) -> bool:
            cursor = db.execute(
                "INSERT INTO acks VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (str(message.notification_key), message.chat_id, user_id, user_name, now),
            )
            return cursor.rowcount == 1

        return await self._run(ack)

    async def record_silence(
        self,
        *,
        silence_id: str,
        alertmanager_url: str,
        delivery_id: int | None,
        chat_id: int,
        created_by: str,
        ends_at: datetime,
    ) -> int:
        def record(db: sqlite3.Connection, now: float) -> int:
            row = db.execute(
                """INSERT INTO bot_silences (silence_id, alertmanager_url, delivery_id, chat_id,
                                             created_by, ends_at, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (
                    silence_id,
                    alertmanager_url,
                    delivery_id,
                    chat_id,
                    created_by,
                    ends_at.timestamp(),
                    now,
                ),
            ).fetchone()
            return int(row[0])

        return await self._run(record)

    async def silence(self, row_id: int) -> BotSilence | None:
        def find(db: sqlite3.Connection, now: float) -> BotSilence | None:
            row = db.execute(
                """SELECT id, silence_id, alertmanager_url, delivery_id, chat_id, expired_at
                   FROM bot_silences WHERE id = ?""",
                (row_id,),
            ).fetchone()
            if row is None:
                return None
            return BotSilence(
                id=row[0],
                silence_id=row[1],
                alertmanager_url=row[2],
                delivery_id=row[3],
                chat_id=row[4],
                expired=row[5] is not None,
            )

        return await self._run(find)

    async def mark_silence_expired(self, silence_id: str) -> None:
        await self._run(
            lambda db, now: db.execute(
                """UPDATE bot_silences SET expired_at = ?
                   WHERE silence_id = ? AND expired_at IS NULL""",
                (now, silence_id),
            )
        )


def _stored_message(
    db: sqlite3.Connection, where: str, args: tuple[object, ...]
) -> StoredMessage | None:
    row = db.execute(
        f"""SELECT p.key, p.message_id, p.created_at, p.request_hash, p.request
            FROM producer_messages p WHERE {where}""",
        args,
    ).fetchone()
    if row is None:
        return None
    rows = db.execute(
        f"""SELECT {MESSAGE_DELIVERY_COLUMNS} FROM deliveries
            WHERE notification_key = ? ORDER BY id""",
        (row["key"],),
    ).fetchall()
    wait = db.execute(
        "SELECT recipient, expires_at, expired_at FROM waiting_messages WHERE key = ?",
        (row["key"],),
    ).fetchone()
    return StoredMessage(
        message_id=row["message_id"],
        created_at=_when(row["created_at"]),
        request_hash=row["request_hash"],
        request=row["request"],
        deliveries=[message_delivery_from_row(r) for r in rows],
        wait=None if wait is None else MessageWait(wait[0], _when(wait[1]), wait[2] is not None),
    )


def _linked_chats(db: sqlite3.Connection, message: NewMessage) -> dict[tuple[str, str], int]:
    """The chat of the recipient ``message`` would wait for, if linked."""
    if message.waiting is None:
        return {}
    row = db.execute(
        """SELECT chat_id FROM recipients
           WHERE producer = ? AND recipient = ? AND chat_id IS NOT NULL""",
        (message.producer, message.waiting.recipient),
    ).fetchone()
    return {} if row is None else {(message.producer, message.waiting.recipient): int(row[0])}


def _release_waiting(
    db: sqlite3.Connection, now: float, producer: str, recipient: str, chat_id: int
) -> tuple[str, ...]:
    """The recipient's messages waiting for a link (not expired) become deliveries to
    ``chat_id``, in the order accepted, due for the scheduler at once (the bot has no
    publisher); their message_ids."""
    waiting = db.execute(
        """SELECT w.id, w.key, w.thread_id, w.silent, w.text, w.buttons,
                  w.disable_link_preview, w.group_ref, p.message_id
           FROM waiting_messages w JOIN producer_messages p ON p.key = w.key
           WHERE w.producer = ? AND w.recipient = ? AND w.expired_at IS NULL
             AND w.expires_at > ?
           ORDER BY w.id""",
        (producer, recipient, now),
    ).fetchall()
    moved = db.execute(
        "SELECT new_chat_id FROM chat_migrations WHERE old_chat_id = ?", (chat_id,)
    ).fetchone()
    for w in waiting:
        db.execute(
            """INSERT INTO deliveries
                   (notification_key, occurrence, chat_id, thread_id, silent, template, text,
                    own_message, buttons, disable_link_preview, created_at, next_attempt_at,
                    republish_at, group_ref)
               VALUES (?, 1, ?, ?, ?, '', ?, 1, ?, ?, ?, ?, ?, ?)
               ON CONFLICT DO NOTHING""",
            (
                w["key"],
                moved[0] if moved else chat_id,
                w["thread_id"],
                w["silent"],
                w["text"],
                w["buttons"],
                w["disable_link_preview"],
                now,
                now,
                now,
                w["group_ref"],
            ),
        )
        db.execute("DELETE FROM waiting_messages WHERE id = ?", (w["id"],))
    return tuple(w["message_id"] for w in waiting)


def _write_receipts(
    db: sqlite3.Connection, now: float, transition: Transition, moved: Sequence[int]
) -> None:
    """The receipts of the rows ``transition`` just changed, in the same transaction:
    bridge/store/sql.py receipt_rows, the rule both stores run."""
    if transition.finishes and moved:
        db.execute(_RECEIPT_ROWS, {"now": now, "moved": json.dumps([int(i) for i in moved])})


def insert_event_row(db: sqlite3.Connection, now: float, event: NewEvent) -> bool:
    """One receipt of no delivery, in the transaction ``db`` is in (a store method's own
    ``_run``: atomically with what the event reports). False if its event_id is
    stored already."""
    return db.execute(_INSERT_EVENT, _params(now, **event_params(event))).fetchone() is not None


def _md5(text: str | None) -> str | None:
    """PostgreSQL's md5(): the event ids of receipts are computed in SQL, alike in both."""
    if text is None:
        return None
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _wake_next(db: sqlite3.Connection, now: float, done: sqlite3.Row) -> None:
    """After a delivery finished, the next one waiting in its group's line (same chat
    and topic) may be published at once."""
    if done["group_ref"] is None:
        return
    db.execute(
        f"""UPDATE deliveries SET republish_at = :now
            WHERE id = (SELECT id FROM deliveries
                        WHERE group_ref = :group_ref AND chat_id = :chat_id
                          AND COALESCE(thread_id, 0) = :thread_key
                          AND state IN {states(WAITING)} AND id > :id
                        ORDER BY id LIMIT 1)""",
        {"now": now, "group_ref": done["group_ref"], "chat_id": done["chat_id"],
         "thread_key": done["thread_key"], "id": done["id"]},
    )  # fmt: skip


@functools.cache
def _statement(transition: Transition, *, row: str = "d.id = :id") -> str:
    """One transition as an UPDATE that returns what waking the next in line needs."""
    keys = "id, group_ref, chat_id, COALESCE(thread_id, 0) AS thread_key"
    return update(transition, SQLITE, row=row, returning=keys)


def _params(now: float, **params: object) -> dict[str, object]:
    """SQLite's values: times as Unix seconds, durations as seconds, UUIDs as text."""
    converted: dict[str, object] = {"now": now}
    for name, value in params.items():
        if isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        converted[name] = value
    return converted


def _statements(script: str) -> list[str]:
    """A migration script's statements (none of ours has a ';' inside a string)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _take_lock(path: Path) -> IO[str]:
    """Refuse a second process on the same file: both would think they own every chat."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock = open(lock_path, "a+")  # noqa: SIM115 - held open for the store's life
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create {lock_path} ({exc.strerror}); sqlite_path must be in a "
            "directory this process can write"
        ) from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise StoreInUse(
            f"{path} is in use by another alertbridge process (pid {holder}); stop it, "
            "or give this one its own sqlite_path (standalone mode is one process per file)"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _connect_operator(path: Path, write: bool) -> sqlite3.Connection:
    """A connection for an operator's command: read-only, or read-write without
    creating the file; it leaves the journal mode to the bridge (WAL)."""
    mode = "rw" if write else "ro"
    try:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        db.row_factory = sqlite3.Row
        db.create_function("md5", 1, _md5, deterministic=True)
        db.execute("PRAGMA busy_timeout = 5000")  # the bridge's write, if any, is short
        if write:
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise StoreUnavailable(
            f"cannot open the SQLite store {path} ({exc}); check the path and its permissions"
        ) from exc
    return db


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row  # by name for the shared row mapper, by index elsewhere
        db.create_function("md5", 1, _md5, deterministic=True)
        db.execute("PRAGMA journal_mode = WAL")
        # A 200 to Alertmanager means the row is on disk, power cut or not.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.Error as exc:
        raise StoreUnavailable(
            f"cannot open the SQLite store {path} ({exc}); check the path and its permissions"
        ) from exc
    return db
