"""PostgreSQL store: every state change of a delivery is one conditional statement.

Two workers can hold the same queue message (a redelivery after a crash, a
republish by the scheduler); the conditional UPDATEs below are what make only
one of them act on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg
from asyncpg.exceptions import UnsupportedClientFeatureError, UnsupportedServerFeatureError

from bridge.digest import DigestItem, render_digest
from bridge.errors import ConfigError, StoreUnavailable
from bridge.models import Delivery, DeliveryState, Notification, Status
from bridge.store.base import Accepted, NewDelivery, migrations

if TYPE_CHECKING:
    from bridge.store.interactions import InteractionStore

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


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip the pool's reset query on release: one round trip less per operation.

    Safe because no query here leaves session state behind (no SET, LISTEN or
    temporary tables; the migration lock is released in a finally).
    """


# Appended to a CTE named `done` (the row that just finished): makes the next
# waiting delivery of the same group and chat due for publishing at once.
_WAKE_NEXT = """, woken AS (
        UPDATE deliveries n SET republish_at = now()
        WHERE n.id = (
            SELECT e.id FROM deliveries e JOIN done
              ON e.group_ref = done.group_ref AND e.chat_id = done.chat_id
             AND COALESCE(e.thread_id, 0) = done.thread_key
            WHERE e.state IN ('queued', 'retry') AND e.id > done.id
            ORDER BY e.id LIMIT 1)
    )"""


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
        from bridge.store.interactions import InteractionStore

        return InteractionStore(self)

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
        """Record one notification and its deliveries in one transaction.

        A copy inside the dedup window changes nothing. Otherwise a new
        occurrence starts and one row per destination is inserted (ON CONFLICT
        DO NOTHING: a concurrent identical request cannot double them).
        """
        # One statement, so one round trip and atomic without BEGIN/COMMIT:
        # the occurrence upsert yields no row for a copy inside the window,
        # and then nothing else is inserted.
        async with self.connection() as conn:
            rows = await conn.fetch(
                """WITH occ AS (
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
                            state, finished_at, last_error)
                       SELECT $1, occ.occurrence, COALESCE(m.new_chat_id, t.chat_id), t.thread_id,
                              t.silent, t.template, t.text, now() + $12::interval, $13, $14,
                              CASE WHEN a.user_name IS NULL THEN 'queued' ELSE 'suppressed' END,
                              CASE WHEN a.user_name IS NULL THEN NULL ELSE now() END,
                              'acked by ' || a.user_name
                       FROM occ
                       CROSS JOIN unnest($7::bigint[], $8::bigint[], $9::bool[], $10::text[],
                                         $11::text[])
                            WITH ORDINALITY AS t(chat_id, thread_id, silent, template, text, ord)
                       LEFT JOIN chat_migrations m ON m.old_chat_id = t.chat_id
                       -- An acked notification's reminders in that chat are suppressed.
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
            )
        if not rows:
            return Accepted(occurrence=None, deliveries=[])
        return Accepted(
            occurrence=rows[0]["occurrence"],
            deliveries=[(r["id"], r["chat_id"]) for r in rows if r["state"] == "queued"],
            suppressed=sum(r["state"] == "suppressed" for r in rows),
        )

    # -- worker ---------------------------------------------------------------

    async def claim(self, delivery_id: int, *, lease: timedelta) -> Delivery | None:
        """queued|retry (due, and first in its group's line) → sending; else None.

        None means someone else has it, it is done, it is not due yet, or an
        older delivery of its group to the same chat is unfinished: "resolved"
        never overtakes the "firing" it resolves. The row's open thread anchor
        comes back with it, in the same round trip.
        """
        async with self.connection() as conn:
            row = await conn.fetchrow(
                """WITH claimed AS (
                       UPDATE deliveries d
                       SET state = 'sending', attempts = attempts + 1, last_attempt_at = now(),
                           lease_until = now() + $2::interval
                       WHERE d.id = $1 AND d.state IN ('queued', 'retry')
                         AND d.next_attempt_at <= now()
                         AND NOT EXISTS (
                             SELECT 1 FROM deliveries e
                             WHERE e.group_ref = d.group_ref AND e.chat_id = d.chat_id
                               AND COALESCE(e.thread_id, 0) = COALESCE(d.thread_id, 0)
                               AND e.id < d.id AND e.state IN ('queued', 'sending', 'retry'))
                       RETURNING d.id, d.chat_id, d.thread_id, d.silent, d.text, d.attempts,
                                 d.plain_text, d.group_ref, d.resolves_group, d.created_at,
                                 d.notification_key
                   )
                   SELECT c.*, g.message_id AS anchor, n.group_key
                   FROM claimed c
                   JOIN notifications n ON n.key = c.notification_key
                   LEFT JOIN group_threads g
                       ON g.group_ref = c.group_ref AND g.chat_id = c.chat_id
                      AND g.thread_key = COALESCE(c.thread_id, 0) AND g.closed_at IS NULL""",
                delivery_id,
                lease,
            )
        if row is None:
            return None
        return Delivery(
            id=row["id"],
            chat_id=row["chat_id"],
            thread_id=row["thread_id"],
            silent=row["silent"],
            text=row["text"],
            attempts=row["attempts"],
            plain_text=row["plain_text"],
            group_ref=row["group_ref"],
            resolves_group=row["resolves_group"],
            anchor_message_id=row["anchor"],
            group_key=row["group_key"],
            accepted_at=row["created_at"],
        )

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

    async def coalesce(self, carrier: Delivery, *, threshold: int) -> Delivery | None:
        """A storm: if ``threshold`` or more deliveries wait for the carrier's chat (and
        topic), fold them and the carrier into one digest message the carrier sends.

        The waiting rows become ``suppressed`` with ``digest_id`` = the carrier:
        accounted for, not lost. Returns the carrier with the digest text (stored,
        so a retry sends the same), stand-alone; None when there is no storm.
        """
        async with self.connection() as conn, conn.transaction():
            waiting = await conn.fetch(
                """SELECT id FROM deliveries
                   WHERE chat_id = $1 AND COALESCE(thread_id, 0) = COALESCE($2::bigint, 0)
                     AND state IN ('queued', 'retry') AND id <> $3
                   ORDER BY id
                   FOR UPDATE SKIP LOCKED""",
                carrier.chat_id,
                carrier.thread_id,
                carrier.id,
            )
            if len(waiting) < threshold:
                return None
            rows = await conn.fetch(
                """WITH folded AS (
                       UPDATE deliveries
                       SET state = 'suppressed', finished_at = now(), digest_id = $1::bigint,
                           last_error = 'in storm digest ' || $1::bigint::text
                       WHERE id = ANY($2::bigint[])
                       RETURNING notification_key
                   )
                   SELECT n.status, n.alert_count, n.common_labels
                   FROM folded f JOIN notifications n ON n.key = f.notification_key
                   UNION ALL
                   SELECT n.status, n.alert_count, n.common_labels
                   FROM deliveries d JOIN notifications n ON n.key = d.notification_key
                   WHERE d.id = $1""",
                carrier.id,
                [r["id"] for r in waiting],
            )
            text = render_digest(
                [
                    DigestItem(r["status"], r["alert_count"], json.loads(r["common_labels"]))
                    for r in rows
                ]
            )
            # The digest is nobody's thread: it neither replies nor opens one.
            await conn.execute(
                """UPDATE deliveries SET text = $2, group_ref = NULL, resolves_group = FALSE,
                                         plain_text = FALSE
                   WHERE id = $1""",
                carrier.id,
                text,
            )
        return replace(
            carrier,
            text=text,
            group_ref=None,
            resolves_group=False,
            anchor_message_id=None,
            plain_text=False,
            coalesced=len(waiting),
        )

    async def postpone(self, delivery_id: int, delay: timedelta) -> bool:
        """Park an unclaimed row until its rate-limit slot: not claimable, republished then."""
        async with self.connection() as conn:
            result = await conn.execute(
                """UPDATE deliveries
                   SET next_attempt_at = GREATEST(next_attempt_at, now() + $2::interval),
                       republish_at = GREATEST(next_attempt_at, now() + $2::interval)
                   WHERE id = $1 AND state IN ('queued', 'retry')""",
                delivery_id,
                delay,
            )
        return bool(result.endswith(" 1"))

    async def defer(self, delivery_id: int, *, republish_after: timedelta) -> bool:
        """A claim missed a row that still waits (not due, or behind its group): park it.

        The scheduler publishes it again when it is due, or sooner when the
        delivery ahead of it finishes (see _WAKE_NEXT).
        """
        async with self.connection() as conn:
            result = await conn.execute(
                """UPDATE deliveries
                   SET republish_at = GREATEST(next_attempt_at, now() + $2::interval)
                   WHERE id = $1 AND state IN ('queued', 'retry')""",
                delivery_id,
                republish_after,
            )
        return bool(result.endswith(" 1"))

    async def _finish(
        self, delivery_id: int, sql_set: str, *args: object, terminal: bool = True
    ) -> bool:
        # Only the lease holder may record an outcome: a row the scheduler
        # already declared ambiguous keeps that verdict unless the send is
        # now known to have succeeded (see mark_delivered). A terminal outcome
        # lets the next delivery of the same group and chat go at once.
        wake = _WAKE_NEXT if terminal else ""
        async with self.connection() as conn:
            finished = await conn.fetchval(
                f"""WITH done AS (
                        UPDATE deliveries SET {sql_set}, lease_until = NULL
                        WHERE id = $1 AND state = 'sending'
                        RETURNING id, group_ref, chat_id, COALESCE(thread_id, 0) AS thread_key
                    ){wake}
                    SELECT count(*) FROM done""",
                delivery_id,
                *args,
            )
        return bool(finished)

    async def mark_delivered(
        self, delivery_id: int, message_id: int, *, plain_text: bool, reply_to: int | None
    ) -> bool:
        """Record the send; open the group's thread (a stand-alone message) or close it (resolved).

        'ambiguous' too: an answer that arrives after the lease expired settles
        the question, so the row stops counting as unknown.
        """
        async with self.connection() as conn:
            finished = await conn.fetchval(
                f"""WITH done AS (
                        UPDATE deliveries
                        SET state = 'delivered', telegram_message_id = $2, plain_text = $3,
                            reply_to_message_id = $4, finished_at = now(), lease_until = NULL,
                            last_error = NULL
                        WHERE id = $1 AND state IN ('sending', 'ambiguous')
                        RETURNING id, group_ref, chat_id, COALESCE(thread_id, 0) AS thread_key,
                                  resolves_group
                    ), opened AS (
                        INSERT INTO group_threads AS g
                            (group_ref, chat_id, thread_key, message_id, closed_at)
                        SELECT group_ref, chat_id, thread_key, $2,
                               CASE WHEN resolves_group THEN now() END
                        FROM done WHERE group_ref IS NOT NULL AND $4::bigint IS NULL
                        ON CONFLICT (group_ref, chat_id, thread_key) DO UPDATE
                            SET message_id = EXCLUDED.message_id, opened_at = now(),
                                closed_at = EXCLUDED.closed_at
                    ), closed AS (
                        UPDATE group_threads g SET closed_at = now()
                        FROM done
                        WHERE $4::bigint IS NOT NULL AND done.resolves_group
                          AND g.group_ref = done.group_ref AND g.chat_id = done.chat_id
                          AND g.thread_key = done.thread_key
                    ){_WAKE_NEXT}
                    SELECT count(*) FROM done""",
                delivery_id,
                message_id,
                plain_text,
                reply_to,
            )
        return bool(finished)

    async def mark_retry(self, delivery_id: int, *, delay: timedelta, error: str) -> bool:
        return await self._finish(
            delivery_id,
            "state = 'retry', last_error = $2, next_attempt_at = now() + $3::interval, "
            "republish_at = now() + $3::interval",
            error,
            delay,
            terminal=False,
        )

    async def mark_failed(self, delivery_id: int, *, error: str) -> bool:
        return await self._finish(
            delivery_id, "state = 'failed', last_error = $2, finished_at = now()", error
        )

    async def mark_ambiguous(self, delivery_id: int, *, error: str, resend: bool) -> bool:
        if resend:
            return await self._finish(
                delivery_id,
                "state = 'retry', was_ambiguous = TRUE, last_error = $2, "
                "next_attempt_at = now(), republish_at = now()",
                error,
                terminal=False,
            )
        return await self._finish(
            delivery_id,
            "state = 'ambiguous', was_ambiguous = TRUE, last_error = $2, finished_at = now()",
            error,
        )

    async def follow_migration(self, delivery_id: int, old_chat_id: int, new_chat_id: int) -> bool:
        """Remember the chat's new id and send this delivery there, at once."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO chat_migrations (old_chat_id, new_chat_id) VALUES ($1, $2)
                   ON CONFLICT (old_chat_id) DO UPDATE SET new_chat_id = EXCLUDED.new_chat_id""",
                old_chat_id,
                new_chat_id,
            )
            result = await conn.execute(
                """UPDATE deliveries
                   SET chat_id = $2::bigint, state = 'retry', lease_until = NULL,
                       next_attempt_at = now(), republish_at = now(),
                       last_error = 'chat migrated to ' || $2::bigint::text
                   WHERE id = $1 AND state = 'sending'""",
                delivery_id,
                new_chat_id,
            )
            # Everything else still waiting for the old id goes there too.
            await conn.execute(
                """UPDATE deliveries SET chat_id = $2
                   WHERE chat_id = $1 AND state IN ('queued', 'retry')""",
                old_chat_id,
                new_chat_id,
            )
        return bool(result.endswith(" 1"))

    # -- scheduler ------------------------------------------------------------

    async def take_due(
        self, *, limit: int, republish_after: timedelta, catch_up: bool = False
    ) -> list[tuple[int, int]]:
        """Rows that are due and unclaimed; each is pushed forward so it is taken once per period.

        ``catch_up`` also takes rows whose attempt is due but whose republish
        time is not: after a restart of a process whose queue was in memory,
        their wake-ups are gone. SKIP LOCKED lets several schedulers (one per
        process) run side by side.
        """
        async with self.connection() as conn:
            rows = await conn.fetch(
                """UPDATE deliveries SET republish_at = now() + $2::interval
                   WHERE id IN (
                       SELECT id FROM deliveries
                       WHERE state IN ('queued', 'retry')
                         AND (republish_at <= now() OR ($3 AND next_attempt_at <= now()))
                       ORDER BY republish_at
                       LIMIT $1
                       FOR UPDATE SKIP LOCKED)
                   RETURNING id, chat_id""",
                limit,
                republish_after,
                catch_up,
            )
        return [(r["id"], r["chat_id"]) for r in rows]

    async def expire_leases(self, *, resend: bool) -> list[int]:
        """sending with an expired lease → ambiguous (or back to retry, when resending)."""
        target = (
            "state = 'retry', next_attempt_at = now(), republish_at = now()"
            if resend
            else "state = 'ambiguous', finished_at = now()"
        )
        async with self.connection() as conn:
            # The deliveries waiting behind an expired one in its group may go now.
            rows = await conn.fetch(
                f"""WITH expired AS (
                        UPDATE deliveries
                        SET {target}, was_ambiguous = TRUE, lease_until = NULL,
                            last_error = 'lease expired while sending: '
                                         'Telegram may or may not have it'
                        WHERE id IN (
                            SELECT id FROM deliveries
                            WHERE state = 'sending' AND lease_until < now()
                            FOR UPDATE SKIP LOCKED)
                        RETURNING id, group_ref, chat_id, COALESCE(thread_id, 0) AS thread_key
                    ), woken AS (
                        UPDATE deliveries n SET republish_at = now()
                        FROM expired x
                        WHERE n.group_ref = x.group_ref AND n.chat_id = x.chat_id
                          AND COALESCE(n.thread_id, 0) = x.thread_key
                          AND n.state IN ('queued', 'retry') AND n.id <> x.id
                    )
                    SELECT id FROM expired"""
            )
        return [r["id"] for r in rows]

    async def backlog(self) -> tuple[int, float]:
        """Deliveries not yet finished, and the age in seconds of the oldest of them."""
        async with self.connection() as conn:
            row = await conn.fetchrow(
                """SELECT count(*) AS n,
                          COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS age
                   FROM deliveries WHERE state IN ('queued', 'sending', 'retry')"""
            )
        return int(row["n"]), float(row["age"])

    async def state_counts(self) -> dict[DeliveryState, int]:
        async with self.connection() as conn:
            rows = await conn.fetch("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
        return {DeliveryState(r["state"]): r["n"] for r in rows}

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")
