"""The lifecycle's transitions (``bridge/delivery.py``) as SQL, in either dialect.

A transition is data: the states it starts from, the columns it writes, the
guards it needs. This module turns one into an ``UPDATE``; a ``Dialect`` holds
the few places PostgreSQL and SQLite spell things differently (the clock,
durations, ``GREATEST`` against ``MAX``, placeholders). Statements are written
with ``:name`` placeholders; PostgreSQL's are numbered at the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.delivery import (
    UNFINISHED,
    Const,
    DeliveryState,
    DueOr,
    Guard,
    Increment,
    NotBefore,
    Now,
    Param,
    Reason,
    Transition,
    WaitingAgain,
    Write,
)
from bridge.receipts import MESSAGE_EVENT_PREFIX, ReceiptEvent, ReceiptState
from bridge.retention import PRUNABLE_STATES
from bridge.store.base import RECORD_COLUMNS, DeliveryQuery

#: PostgreSQL infers a parameter's type from its first use, and a parameter
#: used as two types fails at run time; every parameter a transition writes is
#: cast to its column's type.
PG_COLUMN_TYPES = {
    "chat_id": "bigint",
    "telegram_message_id": "bigint",
    "reply_to_message_id": "bigint",
    "digest_id": "bigint",
    "plain_text": "boolean",
    "reason": "text",
    "last_error": "text",
    "operator_note": "text",
}


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    now: str  # the current time as an expression
    greatest: str  # the two-argument maximum
    true: str
    false: str
    #: How a duration parameter is added to a time: ``{now} + {param}``.
    duration: str
    #: Appended to a SELECT of rows to change: skip (never wait for) rows others hold.
    skip_locked: str = ""
    #: A JSON object, as text, from ``'key', value, ...`` pairs.
    json_object: str = "json_object({})"
    #: The recipient a stored request (``p.request``, JSON text) names, or NULL.
    request_recipient: str = "json_extract(p.request, '$.recipient')"

    def literal(self, value: str | bool | int | None) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return self.true if value else self.false
        if isinstance(value, int):
            return str(value)
        return "'" + value.replace("'", "''") + "'"


POSTGRES = Dialect(
    name="postgres",
    now="now()",
    greatest="GREATEST",
    true="TRUE",
    false="FALSE",
    duration="{now} + :{param}::interval",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    json_object="json_build_object({})::text",
    request_recipient="(p.request::jsonb ->> 'recipient')",
)
SQLITE = Dialect(
    name="sqlite",
    now=":now",  # the store passes its clock's time, in Unix seconds
    greatest="MAX",
    true="1",
    false="0",
    duration="{now} + :{param}",  # durations are passed as seconds
)


def expression(write: Write, column: str, dialect: Dialect) -> str:
    match write:
        case Now(plus=None):
            return dialect.now
        case Now(plus=str(param)):
            return dialect.duration.format(now=dialect.now, param=param)
        case NotBefore(column=current, at=at):
            return f"{dialect.greatest}({current}, {expression(at, column, dialect)})"
        case DueOr(column=due, otherwise=otherwise):
            later = expression(otherwise, column, dialect)
            return f"CASE WHEN {due} > {dialect.now} THEN {due} ELSE {later} END"
        case Param(name=name):
            cast = PG_COLUMN_TYPES.get(column) if dialect is POSTGRES else None
            return f":{name}::{cast}" if cast else f":{name}"
        case Const(value=value):
            return dialect.literal(value)
        case Increment(column=counted, by=by):
            return f"{counted} + {by}"
        case WaitingAgain():
            return "CASE WHEN attempts = 0 THEN 'queued' ELSE 'retry' END"
    raise AssertionError(f"unknown write {write!r}")


def states(names: frozenset[str] | set[str]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in sorted(names)) + ")"


def guard(condition: Guard, dialect: Dialect) -> str:
    now = dialect.now
    match condition:
        case Guard.DUE:
            return f"d.next_attempt_at <= {now}"
        case Guard.FIRST_IN_GROUP:
            return f"""NOT EXISTS (
                SELECT 1 FROM deliveries e
                WHERE e.group_ref = d.group_ref AND e.chat_id = d.chat_id
                  AND COALESCE(e.thread_id, 0) = COALESCE(d.thread_id, 0)
                  AND e.id < d.id AND e.state IN {states(UNFINISHED)})"""
        case Guard.LEASE_HELD:
            return f"d.lease_until > {now}"
        case Guard.LEASE_EXPIRED:
            return f"d.lease_until < {now}"
        case Guard.NOT_WRITTEN:
            return "d.send_started_at IS NULL"
        case Guard.WRITTEN:
            return "d.send_started_at IS NOT NULL"
        case Guard.FOLDABLE:
            return f"d.own_message = {dialect.false}"
    raise AssertionError(f"unknown guard {condition!r}")


def set_clause(transition: Transition, dialect: Dialect) -> str:
    return ", ".join(
        f"{column} = {expression(write, column, dialect)}"
        for column, write in transition.assignments().items()
    )


def where_clause(transition: Transition, dialect: Dialect, *, row: str = "d.id = :id") -> str:
    """The rows ``transition`` may change: its start states, its guards, and ``row``."""
    conditions = [f"d.state IN {states(transition.start)}"]
    conditions += [guard(g, dialect) for g in transition.guards]
    if row:
        conditions.insert(0, row)
    return " AND ".join(conditions)


def update(
    transition: Transition,
    dialect: Dialect,
    *,
    row: str = "d.id = :id",
    returning: str = "id",
) -> str:
    """``UPDATE deliveries`` for one transition, with ``:name`` placeholders."""
    return (
        f"UPDATE deliveries AS d SET {set_clause(transition, dialect)} "
        f"WHERE {where_clause(transition, dialect, row=row)} "
        f"RETURNING {returning}"
    )


# -- receipts (bridge/receipts.py): the outbox ------------------------------------------

#: A delivery event's id, from the finished row ``d``: bridge.receipts.delivery_event_id
#: computes the same (SQLite gets PostgreSQL's md5() as a function of its connection).
EVENT_ID = (
    "md5(CAST(d.notification_key AS TEXT) || '/' || d.id || '/' || d.operator_resends"
    " || '/' || d.state)"
)

#: What a finishing transition's changed rows must carry for their receipts (on
#: PostgreSQL the receipts are written from the UPDATE's RETURNING, in the same
#: statement; the table itself still shows the old row there).
DONE_COLUMNS = (
    "id, group_ref, chat_id, COALESCE(thread_id, 0) AS thread_key, notification_key, "
    "own_message, state, attempts, telegram_message_id, last_error, reason, "
    "operator_resends, finished_at"
)


def receipt_rows(dialect: Dialect, *, source: str, where: str) -> str:
    """The one rule of receipts, as SQL: each row of ``source`` (aliased ``d``, rows a
    transition just put in a final state) that is a producer's own message, accepted
    while the producer had a callback_url, gets its receipt row. Once: a second
    write of the same final occurrence finds its event_id taken.

    PostgreSQL runs it as a CTE over the UPDATE's RETURNING (``source`` ``done d``);
    SQLite as the next statement of the same transaction, over the changed ids.
    """
    recipient = dialect.request_recipient
    payload = dialect.json_object.format(
        f"'recipient', {recipient}, 'status', d.state, 'attempts', d.attempts, "
        "'telegram_message_id', d.telegram_message_id, 'error', d.last_error, "
        "'reason', d.reason"
    )
    # A message to a recipient names the recipient, never its chat (a user's own
    # Telegram id), as GET /v1/messages does.
    return f"""INSERT INTO receipts
            (event_id, event, producer, delivery_id, message_id, chat_id, payload,
             occurred_at, next_attempt_at)
        SELECT {EVENT_ID}, '{MESSAGE_EVENT_PREFIX}' || d.state, p.producer, d.id,
               p.message_id, CASE WHEN {recipient} IS NULL THEN d.chat_id END, {payload},
               d.finished_at, {dialect.now}
        FROM {source} JOIN producer_messages p ON p.key = d.notification_key
        WHERE {where} AND d.own_message = {dialect.true} AND p.receipts = {dialect.true}
        ON CONFLICT (event_id) DO NOTHING"""


def receipts_cte(transition: Transition) -> str:
    """PostgreSQL: the CTE (after one named ``done``, with ``DONE_COLUMNS``) that writes
    the receipts of the rows ``transition`` finished; nothing for one that finishes none."""
    if not transition.finishes:
        return ""
    return f", receipted AS ({receipt_rows(POSTGRES, source='done d', where='TRUE')})"


#: What a message that waited for its recipient's link in vain says it failed of.
NOT_LINKED_ERROR = "the recipient did not link a chat before the message expired"


def expired_wait_receipts(dialect: Dialect, *, source: str, where: str) -> str:
    """The ``message.failed`` receipts (reason not_linked) of the waiting messages
    ``where`` selects from ``source`` (aliased ``w``, rows just marked expired; on
    PostgreSQL the UPDATE's RETURNING, as for receipt_rows): the message had no delivery,
    so the receipt is an event row of no delivery, named by the message, its chat
    null and its recipient given, as a delivery's receipt to a recipient is. Once: the
    event id is the message key's."""
    event = ReceiptEvent.FAILED.value
    payload = dialect.json_object.format(
        "'chat_id', NULL, 'recipient', w.recipient, 'status', 'failed', 'attempts', 0, "
        f"'telegram_message_id', NULL, 'error', {dialect.literal(NOT_LINKED_ERROR)}, "
        f"'reason', '{Reason.NOT_LINKED.value}'"
    )
    return f"""INSERT INTO receipts
            (event_id, event, producer, delivery_id, message_id, chat_id, payload,
             occurred_at, next_attempt_at)
        SELECT md5('{event}/' || CAST(w.key AS TEXT) || '/{Reason.NOT_LINKED.value}'),
               '{event}', p.producer, NULL, p.message_id, NULL, {payload},
               w.expired_at, {dialect.now}
        FROM {source} JOIN producer_messages p ON p.key = w.key
        WHERE {where} AND p.receipts = {dialect.true}
        ON CONFLICT (event_id) DO NOTHING"""


#: The columns a claimed receipt is read with (bridge.store.base.receipt_from_row).
RECEIPT_COLUMNS = (
    "id, event_id, event, producer, delivery_id, message_id, chat_id, payload, occurred_at, "
    "attempts, state, last_error"
)


def insert_event(dialect: Dialect) -> str:
    """One event row (bridge.store.base.NewEvent, ``event_params``); no row if its
    event_id is taken. Returns the new row's id. Runs alone (``Store.add_event``) or
    as one statement of a caller's transaction inside a store."""
    pg = dialect is POSTGRES
    bigint = "::bigint" if pg else ""
    return f"""INSERT INTO receipts
            (event_id, event, producer, delivery_id, message_id, chat_id, payload,
             occurred_at, next_attempt_at)
        VALUES (:event_id, :event, :producer, :delivery_id{bigint}, :message_id,
                :chat_id{bigint}, :payload, {dialect.now}, {dialect.now})
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id"""


def claim_receipts(dialect: Dialect) -> str:
    """Up to :limit due receipts, oldest due first, each pushed :lease ahead (a sender
    that dies mid-POST leaves it due again then) with its attempt counted.
    PostgreSQL skips the rows another sender is claiming."""
    return f"""UPDATE receipts
        SET attempts = attempts + 1,
            next_attempt_at = {dialect.duration.format(now=dialect.now, param="lease")}
        WHERE id IN (
            SELECT id FROM receipts
            WHERE state = '{ReceiptState.PENDING.value}' AND next_attempt_at <= {dialect.now}
            ORDER BY next_attempt_at LIMIT :limit{dialect.skip_locked})
        RETURNING {RECEIPT_COLUMNS}"""


def receipt_sent(dialect: Dialect) -> str:
    """Taken (2xx): from any sender, even one whose lease ran out meanwhile."""
    return f"""UPDATE receipts
        SET state = '{ReceiptState.SENT.value}', finished_at = {dialect.now}, last_error = NULL
        WHERE id = :id AND state = '{ReceiptState.PENDING.value}'"""


def receipt_not_taken(dialect: Dialect, *, give_up: bool) -> str:
    """Not taken: due again after :delay, or given up. Only by the sender of the latest
    claim (:attempts): a stale one must not push back a newer claim's row."""
    if give_up:
        change = f"state = '{ReceiptState.GAVE_UP.value}', finished_at = {dialect.now}"
    else:
        change = f"next_attempt_at = {dialect.duration.format(now=dialect.now, param='delay')}"
    return f"""UPDATE receipts SET {change}, last_error = :error
        WHERE id = :id AND state = '{ReceiptState.PENDING.value}' AND attempts = :attempts"""


PENDING_RECEIPTS = f"SELECT count(*) FROM receipts WHERE state = '{ReceiptState.PENDING.value}'"


def prune_event_receipts(dialect: Dialect) -> str:
    """Events of no delivery, finished (sent or given up) before the horizon."""
    return f"""DELETE FROM receipts WHERE id IN (
        SELECT id FROM receipts
        WHERE delivery_id IS NULL AND finished_at < {ago(dialect, "finished")}
        ORDER BY finished_at LIMIT :limit{dialect.skip_locked})"""


_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """PostgreSQL's placeholders: ``:name`` → ``$n``; the names in ``$n`` order."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(order)


def arguments(order: tuple[str, ...], params: Mapping[str, object]) -> list[object]:
    missing = [name for name in order if name not in params]
    if missing:
        raise TypeError(f"missing statement parameters: {missing}")
    return [params[name] for name in order]


# -- retention (bridge/retention.py) ---------------------------------------------------
# Each statement selects at most :limit rows, oldest first; :finished and
# :notifications are the horizons (durations).


def ago(dialect: Dialect, param: str) -> str:
    """The moment the duration parameter ``param`` before now."""
    if dialect is POSTGRES:
        return f"now() - :{param}::interval"
    return f"{dialect.now} - :{param}"


def prunable_deliveries(dialect: Dialect) -> str:
    """Ids of finished deliveries past their horizon that no digest row points at, whose
    receipts are not still being sent, and that an open thread does not show: its
    first message, and the latest reply after it."""
    return f"""SELECT d.id FROM deliveries d
        WHERE d.finished_at < {ago(dialect, "finished")}
          AND d.state IN {states(PRUNABLE_STATES)}
          AND NOT EXISTS (SELECT 1 FROM deliveries c WHERE c.digest_id = d.id)
          AND NOT EXISTS (
              SELECT 1 FROM receipts r
              WHERE r.delivery_id = d.id AND r.state = '{ReceiptState.PENDING.value}')
          AND NOT EXISTS (
              SELECT 1 FROM group_threads g
              WHERE g.group_ref = d.group_ref AND g.chat_id = d.chat_id
                AND g.thread_key = COALESCE(d.thread_id, 0) AND g.closed_at IS NULL
                AND (d.telegram_message_id = g.message_id OR NOT EXISTS (
                    SELECT 1 FROM deliveries r
                    WHERE r.chat_id = g.chat_id AND r.reply_to_message_id = g.message_id
                      AND r.state = '{DeliveryState.DELIVERED.value}' AND r.id > d.id)))
        ORDER BY d.finished_at LIMIT :limit{dialect.skip_locked}"""


def prunable_notifications(dialect: Dialect) -> str:
    """Keys of notifications with no delivery left whose last occurrence is past the
    horizon (which covers the dedup window), and no message still waiting for its
    recipient's link (one that expired goes: its row is deleted with the message)."""
    return f"""SELECT n.key FROM notifications n
        WHERE n.occurrence_at < {ago(dialect, "notifications")}
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_key = n.key)
          AND NOT EXISTS (SELECT 1 FROM waiting_messages w
                          WHERE w.key = n.key AND w.expired_at IS NULL)
        ORDER BY n.occurrence_at LIMIT :limit{dialect.skip_locked}"""


def prune_group_threads(dialect: Dialect) -> str:
    return f"""DELETE FROM group_threads WHERE (group_ref, chat_id, thread_key) IN (
        SELECT group_ref, chat_id, thread_key FROM group_threads
        WHERE closed_at < {ago(dialect, "finished")}
        ORDER BY closed_at LIMIT :limit{dialect.skip_locked})"""


def prune_telegram_updates(dialect: Dialect) -> str:
    return f"""DELETE FROM telegram_updates WHERE update_id IN (
        SELECT update_id FROM telegram_updates
        WHERE received_at < {ago(dialect, "finished")}
        ORDER BY received_at LIMIT :limit{dialect.skip_locked})"""


def prune_bot_silences(dialect: Dialect) -> str:
    return f"""DELETE FROM bot_silences WHERE id IN (
        SELECT id FROM bot_silences
        WHERE ends_at < {ago(dialect, "finished")}
        ORDER BY ends_at LIMIT :limit{dialect.skip_locked})"""


def prune_recipient_links(dialect: Dialect) -> str:
    """Expired link tokens: never usable again."""
    return f"""DELETE FROM recipient_links WHERE token_hash IN (
        SELECT token_hash FROM recipient_links
        WHERE expires_at < {dialect.now}
        ORDER BY expires_at LIMIT :limit{dialect.skip_locked})"""


def prune_recipients(dialect: Dialect) -> str:
    """Recipients not linked, unchanged past the horizon, with no token pending."""
    return f"""DELETE FROM recipients WHERE (producer, recipient) IN (
        SELECT r.producer, r.recipient FROM recipients r
        WHERE r.chat_id IS NULL AND r.updated_at < {ago(dialect, "finished")}
          AND NOT EXISTS (SELECT 1 FROM recipient_links l
                          WHERE l.producer = r.producer AND l.recipient = r.recipient)
        ORDER BY r.updated_at LIMIT :limit{dialect.skip_locked})"""


def find_deliveries(query: DeliveryQuery, dialect: Dialect) -> tuple[str, dict[str, object]]:
    """The operator's listing (``DeliveryQuery``) as one SELECT, with ``:name`` placeholders."""
    pg = dialect is POSTGRES
    conditions: list[str] = []
    params: dict[str, object] = {"limit": query.limit}
    if query.state is not None:
        conditions.append("d.state = :state")
        params["state"] = query.state.value
    if query.chat_id is not None:
        conditions.append("d.chat_id = :chat_id" + ("::bigint" if pg else ""))
        params["chat_id"] = query.chat_id
    if query.source is not None:
        conditions.append("n.source = :source")
        params["source"] = query.source
    if query.since is not None:
        conditions.append(f"d.created_at >= {dialect.now} - :since" + ("::interval" if pg else ""))
        params["since"] = query.since
    if query.group_ref is not None:
        conditions.append("d.group_ref = :group_ref" + ("::uuid" if pg else ""))
        params["group_ref"] = query.group_ref
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT {RECORD_COLUMNS} FROM deliveries d "
        f"JOIN notifications n ON n.key = d.notification_key "
        f"{where} ORDER BY d.id DESC LIMIT :limit"
    )
    return sql, params
