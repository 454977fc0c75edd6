"""PostgreSQL store: every state change of a delivery is one conditional statement.

Two workers can hold the same queue message (a redelivery after a crash, a
republish by the scheduler); the conditional UPDATEs below are what make only
one of them act on it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import asyncpg
from asyncpg.exceptions import UnsupportedClientFeatureError, UnsupportedServerFeatureError

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
    delivery_from_row,
    digest_carrier,
    initial,
    lease_expired,
    threads_closed_by_digest,
)
from bridge.digest import DigestItem
from bridge.errors import ConfigError, StoreUnavailable
from bridge.models import Notification, Status
from bridge.receipts import Receipt
from bridge.retention import Horizon, Table
from bridge.store.base import (
    MESSAGE_DELIVERY_COLUMNS,
    RECORD_COLUMNS,
    Accepted,
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
    RecipientState,
    StoredMessage,
    ThreadAnchor,
    event_params,
    message_delivery_from_row,
    migrations,
    receipt_from_row,
    record_from_row,
    resolve_waiting,
)
from bridge.store.interactions import InteractionStore
from bridge.store.sql import (
    DONE_COLUMNS,
    PENDING_RECEIPTS,
    POSTGRES,
    RECEIPT_COLUMNS,
    arguments,
    claim_receipts,
    expired_wait_receipts,
    find_deliveries,
    insert_event,
    numbered,
    prunable_deliveries,
    prunable_notifications,
    prune_bot_silences,
    prune_event_receipts,
    prune_group_threads,
    prune_recipient_links,
    prune_recipients,
    prune_telegram_updates,
    receipt_not_taken,
    receipt_sent,
    receipts_cte,
    states,
    update,
    where_clause,
)

S = DeliveryState

log = logging.getLogger(__name__)

# What a retry cures, by SQLSTATE (PostgreSQL's errcodes appendix): the
# server going away or coming back, or a transient conflict; never a query's
# own fault. Whole classes first, then single conditions.
_RETRYABLE_CLASSES = frozenset(
    {
        "08",  # connection_exception (asyncpg.PostgresConnectionError and its kin)
        "53",  # insufficient_resources: too_many_connections, out_of_memory, disk_full
    }
)
_RETRYABLE_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: still connected to a demoted primary
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57014",  # query_canceled: statement_timeout, or an operator's pg_cancel_backend
        "57P01",  # admin_shutdown: the server stops or restarts, or pg_terminate_backend
        "57P02",  # crash_shutdown: another backend crashed and the server resets
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "57P05",  # idle_session_timeout
        "58030",  # io_error
    }
)
# asyncpg's own errors that say "this caller used the API wrongly", not
# "the connection is gone": ClientConfigurationError and the argument
# DataError are also ValueErrors.
_MISUSE = (ValueError, UnsupportedClientFeatureError, UnsupportedServerFeatureError)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` from asyncpg (or the socket under it) is one a retry can cure.

    The one place that decides it: every store method goes through
    ``PostgresStore.connection``, which turns these into StoreUnavailable, so a
    caller sees either StoreUnavailable (503 at the receiver, retried by the
    worker) or a genuine bug. Decided by class and SQLSTATE, never by message.
    """
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in _RETRYABLE_CLASSES or state in _RETRYABLE_STATES
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "pool is closing", ...
        return not isinstance(exc, _MISUSE)
    # OSError covers refused and reset connections, DNS failures and timeouts
    # (TimeoutError is an OSError); InternalClientError is asyncpg's protocol
    # state machine meeting a connection the server just terminated ("cannot
    # switch to state 12; another operation (2) is in progress").
    return isinstance(exc, OSError | asyncpg.InternalClientError)


@contextlib.contextmanager
def _classified() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not unavailable(exc):
            raise
        raise StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc


# Any fixed numbers: the lock that serialises concurrent `migrate` runs, and
# the one that lets one process of many poll Telegram for the bot's updates.
_MIGRATION_LOCK = 0x616C6572
_POLLER_LOCK = 0x41_42_50_4F
# One pruner across replicas: a batch runs only under this transaction lock.
_PRUNER_LOCK = 0x41_42_50_52
# The class of the per-key locks producers' messages are inserted under ("ABMS";
# two int4 keys: apart from the one-bigint locks above).
_MESSAGE_LOCKS = 0x41_42_4D_53
# The class of the per-recipient locks ("ABRC"): a message that would wait for a
# recipient's link and the link itself (bridge/store/interactions.py) take it, so
# a link never misses a message accepted to wait at the same moment.
RECIPIENT_LOCKS = 0x41_42_52_43


def recipient_lock_key(producer: str, recipient: str) -> str:
    """What a recipient's lock is the hashtext() of (the length first: no pair spells another)."""
    return f"{len(producer)}:{producer}/{recipient}"


_PRUNABLE_DELIVERIES = numbered(prunable_deliveries(POSTGRES))
_PRUNABLE_NOTIFICATIONS = numbered(prunable_notifications(POSTGRES))
_PRUNE_BY_DELETE = {
    Table.GROUP_THREADS: numbered(prune_group_threads(POSTGRES)),
    Table.TELEGRAM_UPDATES: numbered(prune_telegram_updates(POSTGRES)),
    Table.BOT_SILENCES: numbered(prune_bot_silences(POSTGRES)),
    Table.RECIPIENT_LINKS: numbered(prune_recipient_links(POSTGRES)),
    Table.RECIPIENTS: numbered(prune_recipients(POSTGRES)),
}
_PRUNE_EVENT_RECEIPTS = numbered(prune_event_receipts(POSTGRES))
_INSERT_EVENT = numbered(insert_event(POSTGRES))
_EXPIRED_WAIT_RECEIPTS = expired_wait_receipts(POSTGRES, source="gone w", where="TRUE")
_CLAIM_RECEIPTS = numbered(claim_receipts(POSTGRES))
_RECEIPT_SENT = numbered(receipt_sent(POSTGRES))
_RECEIPT_NOT_TAKEN = {
    give_up: numbered(receipt_not_taken(POSTGRES, give_up=give_up)) for give_up in (False, True)
}


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip the pool's reset query on release: one round trip less per operation.

    Safe because no query here leaves session state behind (no SET, LISTEN or
    temporary tables; the migration lock is released in a finally).
    """


# Appended to a CTE named `done` (the row that just finished): makes the next
# waiting delivery of the same group and chat due for publishing at once.
_WAKE_NEXT = f""", woken AS (
        UPDATE deliveries n SET republish_at = now()
        WHERE n.id = (
            SELECT e.id FROM deliveries e JOIN done
              ON e.group_ref = done.group_ref AND e.chat_id = done.chat_id
             AND COALESCE(e.thread_id, 0) = done.thread_key
            WHERE e.state IN {states(WAITING)} AND e.id > done.id
            ORDER BY e.id LIMIT 1)
    )"""


def _claim_statement(transition: Transition) -> tuple[str, tuple[str, ...]]:
    """``transition`` (a claim), with the row's open thread anchor, group key and the
    chat's backlog (counted up to ``cap``) in the same round trip."""
    return numbered(
        f"""WITH claimed AS ({update(transition, POSTGRES, returning=", ".join(CLAIMED_COLUMNS))})
            SELECT c.*, g.message_id AS anchor, n.group_key,
                   (SELECT count(*) FROM (
                        SELECT 1 FROM deliveries w
                        WHERE w.chat_id = c.chat_id
                          AND COALESCE(w.thread_id, 0) = COALESCE(c.thread_id, 0)
                          AND w.state IN {states(WAITING)} AND w.id <> c.id
                        LIMIT :cap) AS waiting) AS backlog
            FROM claimed c
            JOIN notifications n ON n.key = c.notification_key
            LEFT JOIN group_threads g
                ON g.group_ref = c.group_ref AND g.chat_id = c.chat_id
               AND g.thread_key = COALESCE(c.thread_id, 0) AND g.closed_at IS NULL"""
    )


_CLAIM = {
    begin: _claim_statement(T.claim_and_begin if begin else T.claim) for begin in (False, True)
}

# What a storm digest for the carrier's ($3) chat ($1) and topic ($2) takes in.
_FOLDABLE = where_clause(
    T.digested,
    POSTGRES,
    row="d.chat_id = $1 AND COALESCE(d.thread_id, 0) = COALESCE($2::bigint, 0) AND d.id <> $3",
)


#: On the partial index deliveries_resent: the scheduler reads it every pass.
_RESENDS = "SELECT COALESCE(sum(operator_resends), 0) FROM deliveries WHERE operator_resends > 0"


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=30,
                timeout=10,
                reset=_keep_session,
            )
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL ({type(exc).__name__}: {exc}); "
                    "check database_url and that the server is up"
                ) from exc
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
                # A wrong password, a database that does not exist, a bad URL:
                # waiting will not cure these.
                raise ConfigError(
                    f"PostgreSQL refused the connection ({type(exc).__name__}: {exc}); "
                    "check database_url"
                ) from exc
            raise
        return cls(pool)

    async def close(self) -> None:
        try:
            await self._pool.close()
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._pool.terminate()  # the server is gone: nothing to close politely

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; whatever a retry can cure becomes StoreUnavailable."""
        with _classified():
            async with self._pool.acquire(timeout=10) as connection:
                try:
                    yield connection
                except Exception as exc:
                    if unavailable(exc):
                        # Whatever state the server left it in, it is not handed out again.
                        connection.terminate()
                    raise

    @asynccontextmanager
    async def poller_lock(self) -> AsyncIterator[bool]:
        """Whether this process may poll Telegram: one getUpdates caller per bot.

        Only the lock's own statements are classified here: what the poller
        does while holding it (Telegram calls) keeps its own exceptions.
        """
        with _classified():
            conn = await self._pool.acquire(timeout=10)
        try:
            with _classified():
                held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", _POLLER_LOCK))
            try:
                yield held
            finally:
                if held:
                    with contextlib.suppress(Exception):
                        await conn.execute("SELECT pg_advisory_unlock($1)", _POLLER_LOCK)
        finally:
            with contextlib.suppress(Exception):  # a lost connection is released as closed
                await self._pool.release(conn)

    def interactions(self) -> InteractionStore:
        return InteractionStore(self.connection)

    # -- schema ---------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending migrations; safe when several processes start at once."""
        applied: list[str] = []
        async with self.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    """CREATE TABLE IF NOT EXISTS schema_migrations (
                           version INTEGER PRIMARY KEY,
                           name TEXT NOT NULL,
                           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
                )
                rows = await conn.fetch("SELECT version FROM schema_migrations")
                done = {r["version"] for r in rows}
                for version, name, sql in migrations("migrations"):
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            version,
                            name,
                        )
                    log.info("applied migration %s", name)
                    applied.append(name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return applied

    async def pending_migrations(self) -> list[str]:
        async with self.connection() as conn:
            exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
            done = (
                {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                if exists
                else set()
            )
        return [name for version, name, _ in migrations("migrations") if version not in done]

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
        """Record one notification and its deliveries in one statement.

        This is ``next_occurrence`` and ``initial`` (bridge/delivery.py) in one
        round trip, atomic without BEGIN/COMMIT: the occurrence upsert yields no
        row for a copy inside the dedup window, and then nothing is inserted.
        ON CONFLICT DO NOTHING on the rows: a concurrent identical request cannot
        double them. The contract tests hold both stores to the pure rules.
        """
        acked = initial("{user_name}")
        async with self.connection() as conn:
            rows = await conn.fetch(
                f"""WITH occ AS (
                       INSERT INTO notifications AS n
                           (key, occurrence, occurrence_at, source, receiver, group_key, status,
                            common_labels, external_url, alert_count)
                       VALUES ($1, 1, now(), $3, $4, $5, $6, $15::jsonb, $16, $17)
                       ON CONFLICT (key) DO UPDATE
                           SET occurrence = n.occurrence + 1, occurrence_at = now()
                           WHERE n.occurrence_at <= now() - $2::interval
                       RETURNING occurrence
                   ), ins AS (
                       INSERT INTO deliveries AS d
                           (notification_key, occurrence, chat_id, thread_id, silent, template,
                            text, republish_at, group_ref, resolves_group,
                            state, finished_at, reason, last_error)
                       SELECT $1, occ.occurrence, COALESCE(m.new_chat_id, t.chat_id), t.thread_id,
                              t.silent, t.template, t.text, now() + $12::interval, $13, $14,
                              CASE WHEN a.user_name IS NULL THEN '{initial(None).state}'
                                   ELSE '{acked.state}' END,
                              CASE WHEN a.user_name IS NULL THEN NULL ELSE now() END,
                              CASE WHEN a.user_name IS NULL THEN NULL ELSE '{acked.reason}' END,
                              replace($18, '{{user_name}}', a.user_name)
                       FROM occ
                       CROSS JOIN unnest($7::bigint[], $8::bigint[], $9::bool[], $10::text[],
                                         $11::text[])
                            WITH ORDINALITY AS t(chat_id, thread_id, silent, template, text, ord)
                       LEFT JOIN chat_migrations m ON m.old_chat_id = t.chat_id
                       LEFT JOIN acks a ON a.notification_key = $1
                            AND a.chat_id = COALESCE(m.new_chat_id, t.chat_id)
                       ORDER BY t.ord
                       ON CONFLICT DO NOTHING
                       RETURNING d.id, d.chat_id, d.state
                   )
                   SELECT occ.occurrence, ins.id, ins.chat_id, ins.state
                   FROM occ LEFT JOIN ins ON TRUE
                   ORDER BY ins.id""",
                key,
                dedup_window,
                notification.source,
                notification.receiver,
                notification.group_key,
                notification.status.value,
                [d.chat_id for d in deliveries],
                [d.thread_id for d in deliveries],
                [d.silent for d in deliveries],
                [d.template for d in deliveries],
                [d.text for d in deliveries],
                republish_after,
                group,
                notification.status is Status.RESOLVED,
                json.dumps(dict(notification.common_labels)),
                notification.external_url,
                len(notification.alerts) + notification.truncated_alerts,
                acked.error,
            )
        if not rows:
            return Accepted(occurrence=None, deliveries=[])
        return Accepted(
            occurrence=rows[0]["occurrence"],
            deliveries=[(r["id"], r["chat_id"]) for r in rows if r["state"] == S.QUEUED],
            suppressed=sum(r["state"] == S.SUPPRESSED for r in rows),
        )

    async def accept_messages(
        self, messages: Sequence[NewMessage], *, republish_after: timedelta
    ) -> list[MessageAccepted]:
        """Producers' messages in one transaction, in a fixed number of round trips
        whatever their number: the keys' locks taken, the inserts pipelined, then
        every message read back in one query. Two requests with the same key at
        once: the second one waits for the first, finds it committed, and is
        answered from it (the row is not this transaction's: replayed, or a conflict).

        The messages are inserted in the batch's order: their deliveries' ids are
        the order they reach a chat in. Inserted so, two batches sharing messages in
        opposite orders would each hold a key the other waits for (a deadlock, a
        503); so first the transaction takes a lock per key (an advisory one, held
        to the commit) in one global order, the locks' own. Whoever inserts two or
        more keys holds their locks, so no such insert waits on a transaction that
        could be waiting for this one.

        One key alone, waiting for no recipient's link, takes no lock (a round
        trip less for every single POST, a few per cent of the receiver's CPU):
        such a transaction waits only at its one insert, before it holds anything
        another could wait for, so it closes no cycle; a batch that meets its key
        waits for its commit."""
        firsts: dict[uuid.UUID, NewMessage] = {}
        for m in messages:
            firsts.setdefault(m.key, m)  # a key given twice: the first is stored
        waiting = sorted(
            {
                recipient_lock_key(m.producer, m.waiting.recipient)
                for m in firsts.values()
                if m.waiting is not None
            }
        )
        async with self.connection() as conn, conn.transaction():
            if len(firsts) > 1 or waiting:
                # The keys' locks, then the locks of the recipients a message would
                # wait for: each class in its own fixed order, as consume_link takes
                # its one.
                await conn.execute(
                    """SELECT pg_advisory_xact_lock(c, h)
                       FROM (SELECT DISTINCT $1::int4 AS c, hashtext(k::text) AS h
                             FROM unnest($2::uuid[]) AS k
                             UNION
                             SELECT $3::int4, hashtext(r) FROM unnest($4::text[]) AS r
                             ORDER BY c, h OFFSET 0) AS locks""",
                    _MESSAGE_LOCKS,
                    list(firsts),
                    RECIPIENT_LOCKS,
                    waiting,
                )
            inserting = list(firsts.values())  # the batch's order
            if waiting:
                # Read under the locks (a statement after them sees a link committed
                # meanwhile): a recipient linked by now gets its delivery at once.
                chats = await _linked_chats(conn, inserting)
                inserting = [resolve_waiting(m, chats) for m in inserting]
            await conn.executemany(
                _INSERT_MESSAGE,
                [
                    (
                        m.key,
                        m.producer,
                        m.message_id,
                        m.request_hash,
                        m.request,
                        [d.chat_id for d in m.deliveries],
                        [d.thread_id for d in m.deliveries],
                        [d.silent for d in m.deliveries],
                        [d.template for d in m.deliveries],
                        [d.text for d in m.deliveries],
                        m.buttons,
                        republish_after,
                        m.disable_link_preview,
                        m.line,
                        m.receipts,
                        *_waiting_params(m),
                    )
                    for m in inserting
                ],
            )
            stored = await _stored_messages(conn, "p.key = ANY($1::uuid[])", list(firsts))
        results: list[MessageAccepted] = []
        for m in messages:
            found = stored.get(m.key)
            assert found is not None  # inserted above, or committed before
            message, inserted_now = found
            if inserted_now and firsts[m.key] is m:
                outcome = MessageOutcome.ACCEPTED
            elif message.request_hash == m.request_hash:
                outcome = MessageOutcome.REPLAYED
            else:
                outcome = MessageOutcome.CONFLICT
            results.append(MessageAccepted(outcome, message))
        return results

    async def stored_message(self, producer: str, message_id: str) -> StoredMessage | None:
        async with self.connection() as conn:
            found = await _stored_messages(
                conn, "p.producer = $1 AND p.message_id = $2", producer, message_id
            )
        return next((message for message, _ in found.values()), None)

    # -- recipients -------------------------------------------------------------

    async def create_link(
        self, producer: str, recipient: str, token_hash: str, *, ttl: timedelta
    ) -> datetime:
        async with self.connection() as conn, conn.transaction():
            expires_at: datetime = await conn.fetchval(
                """INSERT INTO recipient_links (token_hash, producer, recipient, expires_at)
                   VALUES ($1, $2, $3, now() + $4::interval) RETURNING expires_at""",
                token_hash,
                producer,
                recipient,
                ttl,
            )
            await conn.execute(
                """INSERT INTO recipients (producer, recipient) VALUES ($1, $2)
                   ON CONFLICT (producer, recipient) DO UPDATE SET updated_at = now()""",
                producer,
                recipient,
            )
        return expires_at

    async def recipient(self, producer: str, recipient: str) -> RecipientState | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(
                """SELECT producer, recipient, chat_id, linked_at FROM recipients
                   WHERE producer = $1 AND recipient = $2""",
                producer,
                recipient,
            )
        return None if row is None else RecipientState(**dict(row))

    async def recipient_chats(self, producer: str, recipients: Sequence[str]) -> dict[str, int]:
        if not recipients:
            return {}
        async with self.connection() as conn:
            rows = await conn.fetch(
                """SELECT recipient, chat_id FROM recipients
                   WHERE producer = $1 AND recipient = ANY($2::text[]) AND chat_id IS NOT NULL""",
                producer,
                list(recipients),
            )
        return {r["recipient"]: r["chat_id"] for r in rows}

    # -- worker ---------------------------------------------------------------

    async def claim(
        self, delivery_id: int, *, lease: timedelta, backlog_up_to: int = 0, begin: bool = False
    ) -> Delivery | None:
        """T.claim (T.claim_and_begin with ``begin``), with the row's open thread anchor,
        group key and the chat's backlog in the same round trip."""
        sql, order = _CLAIM[begin]
        params = {"id": delivery_id, "lease": lease, "cap": backlog_up_to}
        async with self.connection() as conn:
            row = await conn.fetchrow(sql, *arguments(order, params))
        if row is None:
            return None
        return delivery_from_row(
            row, anchor=row["anchor"], group_key=row["group_key"], backlog=row["backlog"]
        )

    async def apply(self, transition: Transition, delivery_id: int, **params: object) -> bool:
        """Run one transition on one row; a transition that finishes the row lets the
        next delivery of its group and chat go at once."""
        sql, order = _statements(transition)
        async with self.connection() as conn:
            changed = await conn.fetchval(sql, *arguments(order, {**params, "id": delivery_id}))
        return bool(changed)

    async def mark_delivered(
        self,
        delivery_id: int,
        message_id: int,
        *,
        plain_text: bool,
        reply_to: int | None,
        thread: ThreadChange,
    ) -> bool:
        """T.delivered, and ``thread`` applied to the group's thread, in one round trip."""
        opens = thread in (ThreadChange.OPEN, ThreadChange.OPEN_CLOSED)
        closes = thread in (ThreadChange.OPEN_CLOSED, ThreadChange.CLOSE)
        sql, order = numbered(
            f"""WITH done AS ({update(T.delivered, POSTGRES, returning=DONE_COLUMNS)}),
                opened AS (
                    INSERT INTO group_threads AS g
                        (group_ref, chat_id, thread_key, message_id, closed_at)
                    SELECT group_ref, chat_id, thread_key, :message_id::bigint,
                           CASE WHEN :closes::boolean THEN now() END
                    FROM done WHERE :opens::boolean
                    ON CONFLICT (group_ref, chat_id, thread_key) DO UPDATE
                        SET message_id = EXCLUDED.message_id, opened_at = now(),
                            closed_at = EXCLUDED.closed_at
                ), closed AS (
                    UPDATE group_threads g SET closed_at = now()
                    FROM done
                    WHERE NOT :opens::boolean AND :closes::boolean
                      AND g.group_ref = done.group_ref AND g.chat_id = done.chat_id
                      AND g.thread_key = done.thread_key
                ){receipts_cte(T.delivered)}{_WAKE_NEXT}
                SELECT count(*) FROM done"""
        )
        params = {
            "id": delivery_id,
            "message_id": message_id,
            "plain_text": plain_text,
            "reply_to": reply_to,
            "opens": opens,
            "closes": closes,
        }
        async with self.connection() as conn:
            finished = await conn.fetchval(sql, *arguments(order, params))
        return bool(finished)

    async def follow_migration(
        self, delivery_id: int, old_chat_id: int, new_chat_id: int, *, error: str
    ) -> bool:
        """T.migrated; remember the chat's new id for every later delivery."""
        sql, order = numbered(update(T.migrated, POSTGRES))
        params = {"id": delivery_id, "new_chat_id": new_chat_id, "error": error}
        async with self.connection() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO chat_migrations (old_chat_id, new_chat_id) VALUES ($1, $2)
                   ON CONFLICT (old_chat_id) DO UPDATE SET new_chat_id = EXCLUDED.new_chat_id""",
                old_chat_id,
                new_chat_id,
            )
            moved = await conn.fetchval(sql, *arguments(order, params))
            # Everything else still waiting for the old id goes there too.
            await conn.execute(
                f"""UPDATE deliveries SET chat_id = $2
                    WHERE chat_id = $1 AND state IN {states(WAITING)}""",
                old_chat_id,
                new_chat_id,
            )
        return moved is not None

    async def coalesce(
        self, carrier: Delivery, *, threshold: int, render: DigestRenderer
    ) -> Delivery | None:
        """A storm: if ``threshold`` or more deliveries wait for the carrier's chat (and
        topic), fold them into one digest the carrier sends (T.digested: accounted
        for, not lost). The text is stored, so a retry sends the same; the carrier
        becomes stand-alone. None when there is no storm."""
        folding = update(
            T.digested,
            POSTGRES,
            row="d.id = ANY(:ids::bigint[])",
            returning=f"{DONE_COLUMNS}, resolves_group",
        )
        fold, fold_order = numbered(
            f"""WITH done AS ({folding}){receipts_cte(T.digested)}
                SELECT id, group_ref, resolves_group, notification_key FROM done"""
        )
        async with self.connection() as conn, conn.transaction():
            waiting = await conn.fetch(
                f"""SELECT id FROM deliveries d WHERE {_FOLDABLE} ORDER BY id
                    FOR UPDATE SKIP LOCKED""",
                carrier.chat_id,
                carrier.thread_id,
                carrier.id,
            )
            if len(waiting) < threshold:
                return None
            params = {
                "ids": [r["id"] for r in waiting],
                "digest_id": carrier.id,
                "error": f"in storm digest {carrier.id}",
            }
            folded = await conn.fetch(fold, *arguments(fold_order, params))
            items = await conn.fetch(
                """SELECT n.status, n.alert_count, n.common_labels
                   FROM deliveries d JOIN notifications n ON n.key = d.notification_key
                   WHERE d.id = ANY($1::bigint[])
                   ORDER BY d.id = $2, d.id""",
                [r["id"] for r in folded] + [carrier.id],
                carrier.id,
            )
            text = render(
                [
                    DigestItem(r["status"], r["alert_count"], json.loads(r["common_labels"]))
                    for r in items
                ]
            )
            closed = threads_closed_by_digest(
                [FoldedRow(r["id"], r["group_ref"], r["resolves_group"]) for r in folded],
                carrier=carrier,
            )
            if closed:
                await conn.execute(
                    """UPDATE group_threads SET closed_at = now()
                       WHERE group_ref = ANY($1::uuid[]) AND chat_id = $2
                         AND thread_key = COALESCE($3::bigint, 0) AND closed_at IS NULL""",
                    list(closed),
                    carrier.chat_id,
                    carrier.thread_id,
                )
            # What waited behind a folded row in its group's line may go now.
            await conn.execute(
                f"""UPDATE deliveries SET republish_at = now()
                    WHERE chat_id = $1 AND COALESCE(thread_id, 0) = COALESCE($2::bigint, 0)
                      AND state IN {states(WAITING)} AND republish_at > now()""",
                carrier.chat_id,
                carrier.thread_id,
            )
            # The digest is nobody's thread: it neither replies nor opens one.
            await conn.execute(
                """UPDATE deliveries SET text = $2, group_ref = NULL, resolves_group = FALSE,
                                         plain_text = FALSE
                   WHERE id = $1""",
                carrier.id,
                text,
            )
        return digest_carrier(carrier, text, len(folded))

    # -- scheduler ------------------------------------------------------------

    async def take_due(
        self,
        *,
        limit: int,
        republish_after: timedelta,
        catch_up: bool = False,
        after_id: int = 0,
    ) -> list[tuple[int, int]]:
        """Rows that are due and unclaimed; each is pushed forward so it is taken once per period.

        ``catch_up`` also takes rows whose attempt is due but whose republish
        time is not (after a restart of a process whose queue was in memory,
        their wake-ups are gone), paging by id from ``after_id`` so a pass takes
        each row once. SKIP LOCKED lets several schedulers run side by side.
        """
        order = "id" if catch_up else "republish_at"
        async with self.connection() as conn:
            rows = await conn.fetch(
                f"""UPDATE deliveries SET republish_at = now() + $2::interval
                    WHERE id IN (
                        SELECT id FROM deliveries
                        WHERE state IN {states(WAITING)}
                          AND (republish_at <= now()
                               OR ($3 AND next_attempt_at <= now() AND id > $4))
                        ORDER BY {order}
                        LIMIT $1
                        FOR UPDATE SKIP LOCKED)
                    RETURNING id, chat_id""",
                limit,
                republish_after,
                catch_up,
                after_id,
            )
        return sorted((r["id"], r["chat_id"]) for r in rows)

    async def expire_leases(self, *, policy: AmbiguityPolicy) -> list[ExpiredLease]:
        """A claimer's lease ran out: before it wrote its request the row waits again;
        after, it is ambiguous (T.lease_expired_*)."""
        found: list[ExpiredLease] = []
        async with self.connection() as conn:
            for transition in (T.lease_expired_unwritten, lease_expired(policy)):
                sql, order = _statements(transition, row="", returning="id, chat_id")
                rows = await conn.fetch(sql, *arguments(order, {}))
                found += [
                    ExpiredLease(r["id"], r["chat_id"], Guard.WRITTEN in transition.guards)
                    for r in rows
                ]
        return found

    async def expire_waiting(self, *, limit: int) -> list[ExpiredWait]:
        """One statement: the rows marked expired, their receipts written from them."""
        async with self.connection() as conn:
            rows = await conn.fetch(
                f"""WITH gone AS (
                       UPDATE waiting_messages w SET expired_at = now()
                       WHERE w.id IN (
                           SELECT id FROM waiting_messages
                           WHERE expired_at IS NULL AND expires_at <= now()
                           ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                         AND w.expired_at IS NULL
                       RETURNING w.id, w.key, w.recipient, w.expired_at
                   ), receipted AS (
                       {_EXPIRED_WAIT_RECEIPTS}
                   )
                   SELECT p.producer, p.message_id, gone.recipient
                   FROM gone JOIN producer_messages p ON p.key = gone.key
                   ORDER BY gone.id""",
                limit,
            )
        return [ExpiredWait(r["producer"], r["message_id"], r["recipient"]) for r in rows]

    async def heartbeat(self, worker_id: str, *, ttl: timedelta) -> list[str]:
        """Say ``worker_id`` is alive; returns every worker seen within ``ttl``, sorted."""
        async with self.connection() as conn:
            rows = await conn.fetch(
                """WITH beat AS (
                       INSERT INTO workers (worker_id) VALUES ($1)
                       ON CONFLICT (worker_id) DO UPDATE SET seen_at = now()
                   ), gone AS (
                       DELETE FROM workers WHERE seen_at < now() - $2::interval * 10
                   )
                   SELECT worker_id FROM workers WHERE seen_at >= now() - $2::interval
                   UNION SELECT $1""",
                worker_id,
                ttl,
            )
        return sorted(r["worker_id"] for r in rows)

    async def leave(self, worker_id: str) -> None:
        """A worker stopping: the others take its shards at their next heartbeat."""
        async with self.connection() as conn:
            await conn.execute("DELETE FROM workers WHERE worker_id = $1", worker_id)

    async def prune(self, horizon: Horizon, *, limit: int) -> dict[Table, int]:
        """One batch of retention (bridge/retention.py): at most ``limit`` rows per table,
        in one short transaction. Rows another transaction holds are skipped, never
        waited for; another replica pruning now makes this a no-op (empty counts)."""
        params: dict[str, object] = {
            "finished": horizon.finished,
            "notifications": horizon.notifications,
            "limit": limit,
        }
        counts: dict[Table, int] = {}
        async with self.connection() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PRUNER_LOCK):
                return counts
            sql, order = _PRUNABLE_DELIVERIES
            ids = [r[0] for r in await conn.fetch(sql, *arguments(order, params))]
            receipts = 0
            if ids:
                # A silence outlives the message it was made from: it names none then.
                await conn.execute(
                    "UPDATE bot_silences SET delivery_id = NULL WHERE delivery_id = ANY($1)", ids
                )
                # A delivery's receipts go with it, sent or not.
                receipts = _deleted(
                    await conn.execute("DELETE FROM receipts WHERE delivery_id = ANY($1)", ids)
                )
                await conn.execute("DELETE FROM deliveries WHERE id = ANY($1)", ids)
            counts[Table.DELIVERIES] = len(ids)
            sql, order = _PRUNABLE_NOTIFICATIONS
            keys = [r[0] for r in await conn.fetch(sql, *arguments(order, params))]
            acks = remembered = 0
            if keys:
                acks = _deleted(
                    await conn.execute("DELETE FROM acks WHERE notification_key = ANY($1)", keys)
                )
                # A message that waited in vain: its row goes with the message.
                await conn.execute("DELETE FROM waiting_messages WHERE key = ANY($1)", keys)
                # A producer's message_id is remembered as long as its notification.
                remembered = _deleted(
                    await conn.execute("DELETE FROM producer_messages WHERE key = ANY($1)", keys)
                )
                await conn.execute("DELETE FROM notifications WHERE key = ANY($1)", keys)
            counts[Table.NOTIFICATIONS] = len(keys)
            counts[Table.ACKS] = acks
            counts[Table.PRODUCER_MESSAGES] = remembered
            for table, (sql, order) in _PRUNE_BY_DELETE.items():
                counts[table] = _deleted(await conn.execute(sql, *arguments(order, params)))
            # A delivery's receipts went with it; other events once long finished.
            sql, order = _PRUNE_EVENT_RECEIPTS
            receipts += _deleted(await conn.execute(sql, *arguments(order, params)))
            counts[Table.RECEIPTS] = receipts
        return counts

    # -- what operators see -----------------------------------------------------

    async def backlog(self) -> tuple[int, float]:
        """Deliveries not yet finished, and the age in seconds of the oldest of them."""
        async with self.connection() as conn:
            row = await conn.fetchrow(
                f"""SELECT count(*) AS n,
                           COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS age
                    FROM deliveries WHERE state IN {states(UNFINISHED)}"""
            )
        return int(row["n"]), float(row["age"])

    async def state_counts(self) -> dict[DeliveryState, int]:
        async with self.connection() as conn:
            rows = await conn.fetch("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
        return {DeliveryState(r["state"]): r["n"] for r in rows}

    async def state_of(self, delivery_id: int) -> DeliveryState | None:
        async with self.connection() as conn:
            state = await conn.fetchval("SELECT state FROM deliveries WHERE id = $1", delivery_id)
        return None if state is None else DeliveryState(state)

    async def find_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        sql, params = find_deliveries(query, POSTGRES)
        sql, order = numbered(sql)
        async with self.connection() as conn:
            rows = await conn.fetch(sql, *arguments(order, params))
        return [record_from_row(r) for r in rows]

    async def delivery(self, delivery_id: int) -> DeliveryRecord | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(
                f"""SELECT {RECORD_COLUMNS}, g.message_id AS anchor, g.opened_at AS anchor_opened,
                           g.closed_at AS anchor_closed
                    FROM deliveries d JOIN notifications n ON n.key = d.notification_key
                    LEFT JOIN group_threads g
                        ON g.group_ref = d.group_ref AND g.chat_id = d.chat_id
                       AND g.thread_key = COALESCE(d.thread_id, 0)
                    WHERE d.id = $1""",
                delivery_id,
            )
        if row is None:
            return None
        thread = None
        if row["anchor"] is not None:
            thread = ThreadAnchor(row["anchor"], row["anchor_opened"], row["anchor_closed"])
        return record_from_row(row, thread)

    async def operator_resends(self) -> int:
        async with self.connection() as conn:
            total = await conn.fetchval(_RESENDS)
        return int(total)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    # -- producers' receipts ------------------------------------------------------

    async def add_event(self, event: NewEvent) -> bool:
        async with self.connection() as conn:
            return await insert_event_row(conn, event)

    async def claim_receipts(self, *, limit: int, lease: timedelta) -> list[Receipt]:
        """SKIP LOCKED: senders in several processes claim disjoint rows."""
        sql, order = _CLAIM_RECEIPTS
        async with self.connection() as conn:
            rows = await conn.fetch(sql, *arguments(order, {"limit": limit, "lease": lease}))
        return sorted((receipt_from_row(r) for r in rows), key=lambda r: r.id)

    async def receipt_sent(self, receipt_id: int) -> bool:
        sql, order = _RECEIPT_SENT
        async with self.connection() as conn:
            status = await conn.execute(sql, *arguments(order, {"id": receipt_id}))
        return _deleted(status) == 1

    async def receipt_not_taken(
        self, receipt_id: int, attempts: int, *, error: str, retry_in: timedelta | None
    ) -> bool:
        sql, order = _RECEIPT_NOT_TAKEN[retry_in is None]
        params = {"id": receipt_id, "attempts": attempts, "error": error, "delay": retry_in}
        async with self.connection() as conn:
            status = await conn.execute(sql, *arguments(order, params))
        return _deleted(status) == 1

    async def pending_receipts(self) -> int:
        async with self.connection() as conn:
            return int(await conn.fetchval(PENDING_RECEIPTS))

    async def receipts(self, producer: str, message_id: str) -> list[Receipt]:
        async with self.connection() as conn:
            rows = await conn.fetch(
                f"""SELECT {RECEIPT_COLUMNS} FROM receipts
                    WHERE producer = $1 AND message_id = $2 ORDER BY id""",
                producer,
                message_id,
            )
        return [receipt_from_row(r) for r in rows]


_INSERT_MESSAGE = """WITH n AS (
       INSERT INTO notifications
           (key, occurrence, occurrence_at, source, receiver, group_key, status, alert_count)
       VALUES ($1, 1, now(), 'producer:' || $2, $2, $3, 'firing', 0)
       ON CONFLICT (key) DO NOTHING
       RETURNING key
   ), p AS (
       INSERT INTO producer_messages
           (key, producer, message_id, request_hash, request, receipts)
       SELECT key, $2, $3, $4, $5, $15 FROM n
   ), w AS (
       INSERT INTO waiting_messages
           (key, producer, recipient, thread_id, silent, text, buttons,
            disable_link_preview, group_ref, expires_at)
       SELECT key, $2, $16::text, $17::bigint, $18::bool, $19::text, $11, $13, $14::uuid,
              now() + $20::interval
       FROM n WHERE $16::text IS NOT NULL
   ), ins AS (
       INSERT INTO deliveries
           (notification_key, occurrence, chat_id, thread_id, silent, template, text,
            own_message, buttons, disable_link_preview, republish_at, group_ref)
       SELECT n.key, 1, COALESCE(mg.new_chat_id, t.chat_id), t.thread_id, t.silent,
              t.template, t.text, TRUE, $11, $13, now() + $12::interval, $14::uuid
       FROM n
       CROSS JOIN unnest($6::bigint[], $7::bigint[], $8::bool[], $9::text[], $10::text[])
            WITH ORDINALITY AS t(chat_id, thread_id, silent, template, text, ord)
       LEFT JOIN chat_migrations mg ON mg.old_chat_id = t.chat_id
       ORDER BY t.ord
       ON CONFLICT DO NOTHING
   )
   SELECT count(*) FROM n"""

#: A message's deliveries' columns, from the LEFT JOIN below (NULL: it has none).
_JOINED_DELIVERY_COLUMNS = ", ".join(
    f"d.{column.strip()}" for column in MESSAGE_DELIVERY_COLUMNS.split(",")
)


async def _stored_messages(
    conn: asyncpg.Connection, where: str, *args: object
) -> dict[uuid.UUID, tuple[StoredMessage, bool]]:
    """The messages ``where`` selects, with their deliveries, in one round trip; and
    whether this transaction inserted each (its row's xmin is this transaction's)."""
    rows = await conn.fetch(
        f"""SELECT p.key, p.message_id, p.created_at, p.request_hash, p.request,
                   p.xmin = pg_current_xact_id_if_assigned()::xid AS inserted_now,
                   w.recipient AS wait_recipient, w.expires_at AS wait_expires_at,
                   w.expired_at AS wait_expired_at,
                   {_JOINED_DELIVERY_COLUMNS}
            FROM producer_messages p
            LEFT JOIN waiting_messages w ON w.key = p.key
            LEFT JOIN deliveries d ON d.notification_key = p.key
            WHERE {where}
            ORDER BY p.key, d.id""",
        *args,
    )
    found: dict[uuid.UUID, tuple[StoredMessage, bool]] = {}
    for row in rows:
        if row["key"] not in found:
            message = StoredMessage(
                message_id=row["message_id"],
                created_at=row["created_at"],
                request_hash=row["request_hash"],
                request=row["request"],
                deliveries=[],
                wait=None
                if row["wait_recipient"] is None
                else MessageWait(
                    row["wait_recipient"],
                    row["wait_expires_at"],
                    row["wait_expired_at"] is not None,
                ),
            )
            found[row["key"]] = (message, bool(row["inserted_now"]))
        if row["id"] is not None:
            found[row["key"]][0].deliveries.append(message_delivery_from_row(row))
    return found


def _waiting_params(m: NewMessage) -> tuple[object, ...]:
    """_INSERT_MESSAGE's $16 to $20: the waiting row's, all NULL for a message that
    does not wait."""
    w = m.waiting
    if w is None:
        return (None, None, None, None, None)
    return (w.recipient, w.thread_id, w.silent, w.text, w.expires_after)


async def _linked_chats(
    conn: asyncpg.Connection, messages: Sequence[NewMessage]
) -> dict[tuple[str, str], int]:
    """The chat of each recipient a waiting message names, for those linked."""
    pairs = [(m.producer, m.waiting.recipient) for m in messages if m.waiting is not None]
    rows = await conn.fetch(
        """SELECT r.producer, r.recipient, r.chat_id FROM recipients r
           JOIN unnest($1::text[], $2::text[]) AS x(producer, recipient)
             ON r.producer = x.producer AND r.recipient = x.recipient
           WHERE r.chat_id IS NOT NULL""",
        [p for p, _ in pairs],
        [r for _, r in pairs],
    )
    return {(r["producer"], r["recipient"]): r["chat_id"] for r in rows}


async def insert_event_row(conn: asyncpg.Connection, event: NewEvent) -> bool:
    """One receipt of no delivery, on ``conn``: inside the caller's transaction when it
    has one (a store method that records what the event reports, atomically with it).
    False if its event_id is stored already."""
    sql, order = _INSERT_EVENT
    return await conn.fetchval(sql, *arguments(order, event_params(event))) is not None


def _deleted(status: str) -> int:
    """The row count of a command tag like ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])


@functools.cache
def _statements(
    transition: Transition, *, row: str = "d.id = :id", returning: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """One transition as a PostgreSQL statement, built once per process.

    With ``returning`` (columns of ``DONE_COLUMNS``) the changed rows come back;
    otherwise their count, and a transition that releases its group wakes the next
    delivery in line. One that finishes rows writes their receipts in the same
    statement (``receipts_cte``).
    """
    changed = update(transition, POSTGRES, row=row, returning=DONE_COLUMNS)
    receipted = receipts_cte(transition)
    if returning is not None:
        return numbered(f"WITH done AS ({changed}){receipted} SELECT {returning} FROM done")
    wake = _WAKE_NEXT if transition.releases_group else ""
    return numbered(
        f"""WITH done AS ({changed}){receipted}{wake}
            SELECT count(*) FROM done"""
    )
