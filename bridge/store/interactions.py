"""What the bot records: updates seen, acks, silences made from Telegram.

Kept beside the delivery store (same pool, same error mapping), apart from
it: the delivery path never reads these tables except for acks at accept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import asyncpg

from bridge.store.base import (
    AlertMessage,
    BotSilence,
    RecipientLinked,
    RecipientState,
    linked_event,
)

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]

# The message (m) shows its own delivery or, as its thread's first message,
# the latest delivered in the thread (d).
_ALERT_MESSAGE = """
    SELECT d.id, m.chat_id, m.telegram_message_id, d.notification_key, d.text,
           n.common_labels, n.status,
           COALESCE(m.reply_to_message_id, m.telegram_message_id) AS anchor,
           a.user_name AS acked_by, a.acked_at
    FROM deliveries m
    JOIN deliveries d ON d.chat_id = m.chat_id AND d.state = 'delivered'
         AND (d.id = m.id OR (m.reply_to_message_id IS NULL
                              AND d.reply_to_message_id = m.telegram_message_id))
    JOIN notifications n ON n.key = d.notification_key
    LEFT JOIN acks a ON a.notification_key = d.notification_key AND a.chat_id = d.chat_id
    WHERE m.chat_id = $1 AND m.telegram_message_id = $2 AND m.state = 'delivered'
    ORDER BY d.id DESC
    LIMIT 1
"""


# The recipient's messages waiting for a link (not expired) become deliveries to
# the chat just linked, in the order accepted, due for the scheduler at once (the
# bot has no publisher): republish_at now.
_RELEASE_WAITING = """
    WITH w AS (
        DELETE FROM waiting_messages
        WHERE producer = $1 AND recipient = $2 AND expired_at IS NULL AND expires_at > now()
        RETURNING id, key, thread_id, silent, text, buttons, disable_link_preview, group_ref
    ), ins AS (
        INSERT INTO deliveries
            (notification_key, occurrence, chat_id, thread_id, silent, template, text,
             own_message, buttons, disable_link_preview, republish_at, group_ref)
        SELECT w.key, 1, COALESCE(mg.new_chat_id, $3::bigint), w.thread_id, w.silent, '',
               w.text, TRUE, w.buttons, w.disable_link_preview, now(), w.group_ref
        FROM w LEFT JOIN chat_migrations mg ON mg.old_chat_id = $3::bigint
        ORDER BY w.id
        ON CONFLICT DO NOTHING
    )
    SELECT p.message_id FROM w JOIN producer_messages p ON p.key = w.key ORDER BY w.id
"""


def _alert_message(row: asyncpg.Record | None) -> AlertMessage | None:
    if row is None:
        return None
    return AlertMessage(
        delivery_id=row["id"],
        chat_id=row["chat_id"],
        message_id=row["telegram_message_id"],
        notification_key=row["notification_key"],
        text=row["text"],
        common_labels=json.loads(row["common_labels"]),  # asyncpg returns JSONB as text
        resolved=row["status"] == "resolved",
        anchor_message_id=row["anchor"],
        acked_by=row["acked_by"],
        acked_at=row["acked_at"],
    )


class InteractionStore:
    def __init__(self, connection: Connect) -> None:
        self._connection = connection

    async def first_sight(self, update_id: int) -> bool:
        """True the first time ``update_id`` is seen: act on it. False: a repeat."""
        async with self._connection() as conn:
            status = await conn.execute(
                "INSERT INTO telegram_updates (update_id) VALUES ($1) ON CONFLICT DO NOTHING",
                update_id,
            )
        return bool(status.endswith(" 1"))

    async def forget_update(self, update_id: int) -> None:
        """Handling failed before anything changed: let Telegram's retry be acted on."""
        async with self._connection() as conn:
            await conn.execute("DELETE FROM telegram_updates WHERE update_id = $1", update_id)

    async def message(self, chat_id: int, message_id: int) -> AlertMessage | None:
        """Alert message ``message_id`` in ``chat_id`` as it shows now, if the bridge sent it."""
        async with self._connection() as conn:
            row = await conn.fetchrow(_ALERT_MESSAGE, chat_id, message_id)
        return _alert_message(row)

    async def ack(self, message: AlertMessage, user_id: int, user_name: str) -> bool:
        """Record an ack; False if this notification was already acked in this chat."""
        async with self._connection() as conn:
            status = await conn.execute(
                """INSERT INTO acks (notification_key, chat_id, user_id, user_name)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
                message.notification_key,
                message.chat_id,
                user_id,
                user_name,
            )
        return bool(status.endswith(" 1"))

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
        async with self._connection() as conn:
            row_id = await conn.fetchval(
                """INSERT INTO bot_silences
                       (silence_id, alertmanager_url, delivery_id, chat_id, created_by, ends_at)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
                silence_id,
                alertmanager_url,
                delivery_id,
                chat_id,
                created_by,
                ends_at,
            )
        return int(row_id)

    async def silence(self, row_id: int) -> BotSilence | None:
        async with self._connection() as conn:
            row = await conn.fetchrow("SELECT * FROM bot_silences WHERE id = $1", row_id)
        if row is None:
            return None
        return BotSilence(
            id=row["id"],
            silence_id=row["silence_id"],
            alertmanager_url=row["alertmanager_url"],
            delivery_id=row["delivery_id"],
            chat_id=row["chat_id"],
            expired=row["expired_at"] is not None,
        )

    async def mark_silence_expired(self, silence_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE bot_silences SET expired_at = now() WHERE silence_id = $1"
                " AND expired_at IS NULL",
                silence_id,
            )

    async def consume_link(
        self, token_hash: str, chat_id: int, *, receipts_for: Collection[str] = ()
    ) -> RecipientLinked | None:
        """The token's row is deleted as it is used: a second use at the same time
        waits on the row, then finds it gone."""
        async with self._connection() as conn, conn.transaction():
            used = await conn.fetchrow(
                """DELETE FROM recipient_links WHERE token_hash = $1 AND expires_at > now()
                   RETURNING producer, recipient""",
                token_hash,
            )
            if used is None:
                return None
            producer, recipient = used["producer"], used["recipient"]
            # Here, not at the top: bridge.store.postgres imports this module.
            from bridge.store.postgres import (
                RECIPIENT_LOCKS,
                insert_event_row,
                recipient_lock_key,
            )

            # A message accepted to wait for this recipient commits before this lock
            # is ours, or finds the recipient linked after: none is missed.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
                RECIPIENT_LOCKS,
                recipient_lock_key(producer, recipient),
            )
            before = await conn.fetchval(
                """SELECT chat_id FROM recipients WHERE producer = $1 AND recipient = $2
                   FOR UPDATE""",
                producer,
                recipient,
            )
            linked_at: datetime = await conn.fetchval(
                """INSERT INTO recipients (producer, recipient, chat_id, linked_at)
                   VALUES ($1, $2, $3, now())
                   ON CONFLICT (producer, recipient) DO UPDATE
                   SET chat_id = excluded.chat_id, linked_at = excluded.linked_at,
                       updated_at = now()
                   RETURNING linked_at""",
                producer,
                recipient,
                chat_id,
            )
            released = await conn.fetch(_RELEASE_WAITING, producer, recipient, chat_id)
            replaced = before if before is not None and before != chat_id else None
            linked = RecipientLinked(
                producer,
                recipient,
                chat_id,
                linked_at,
                replaced,
                released=tuple(r["message_id"] for r in released),
            )
            if producer in receipts_for:
                await insert_event_row(conn, linked_event(linked))
        return linked

    async def unlink_chat(self, chat_id: int) -> list[RecipientState]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                """UPDATE recipients r SET chat_id = NULL, linked_at = NULL, updated_at = now()
                   FROM (SELECT producer, recipient, chat_id, linked_at FROM recipients
                         WHERE chat_id = $1 FOR UPDATE) AS old
                   WHERE r.producer = old.producer AND r.recipient = old.recipient
                   RETURNING old.producer, old.recipient, old.chat_id, old.linked_at""",
                chat_id,
            )
        states = [RecipientState(**dict(r)) for r in rows]
        return sorted(states, key=lambda r: (r.producer, r.recipient))
