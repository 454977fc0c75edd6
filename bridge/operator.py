"""``alertbridge deliveries``: what an operator sees of the deliveries, and the one
thing they may do to one (resend it after checking the chat).

These run beside the bridge, on either store: they open the store themselves
(PostgreSQL: a connection like any other; SQLite: ``open_for_operator``,
which does not take the bridge's lock). Listing and showing only read. A
resend is the lifecycle's ``T.operator_resend``: the row waits again, due at
once, and the running bridge's scheduler publishes it to a worker.

The formatting below is pure: records in, text out.
"""

from __future__ import annotations

import dataclasses
import enum
import getpass
import json
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.config import Config
from bridge.delivery import DeliveryState, T
from bridge.errors import BridgeError
from bridge.store.base import DeliveryQuery, DeliveryRecord, Store
from bridge.telegram_text import visible_text

#: Exit codes: found and done; nothing found or a state refused; usage or config.
OK, NOTHING, USAGE = 0, 1, 2

#: The states a resend starts from, named for the messages below.
RESENDABLE = sorted(s.value for s in T.operator_resend.start)

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1w``, or a sum of them (``1h30m``)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise BridgeError(f"--since {text!r}: give a duration such as 30m, 2h, 1d or 1h30m")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def operator_name() -> str:
    """Who runs the command: the OS user, as ``--by`` defaults to."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no $USER and no passwd entry (a bare container)
        return "unknown"


async def open_store(config: Config, *, write: bool) -> Store:
    """The bridge's store, opened beside the running bridge; refuses a schema behind
    this version (the columns these commands read would be missing)."""
    store: Store
    if config.database_url:
        from bridge.store.postgres import PostgresStore

        store = await PostgresStore.connect(config.database_url, min_size=1, max_size=1)
    else:
        from bridge.store.sqlite import SqliteStore

        store = await SqliteStore.open_for_operator(config.sqlite_path, write=write)
    try:
        pending = await store.pending_migrations()
    except BaseException:
        await store.close()
        raise
    if pending:
        await store.close()
        raise BridgeError(
            f"the store's schema is behind this alertbridge (pending: {', '.join(pending)}); "
            "run `alertbridge migrate` (or start the new version) first"
        )
    return store


# -- formatting --------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _chat(record: DeliveryRecord) -> str:
    return str(record.chat_id) + ("" if record.thread_id is None else f"/{record.thread_id}")


def _error(record: DeliveryRecord) -> str:
    if record.reason and record.last_error:
        return f"{record.reason}: {record.last_error}"
    return record.reason or record.last_error or ""


def table(records: Sequence[DeliveryRecord], width: int | None) -> str:
    """One line per delivery, the error column cut to fit ``width`` characters
    (None: whole, for a pipe to grep)."""
    header = ("ID", "STATE", "CHAT", "SOURCE", "ATTEMPTS", "LAST ATTEMPT (UTC)", "ERROR")
    rows = [
        (
            str(r.id),
            r.state.value + ("*" if r.operator_resends else ""),
            _chat(r),
            r.source,
            str(r.attempts),
            _when(r.last_attempt_at),
            _error(r).replace("\n", " "),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    fixed = sum(w + 2 for w in widths)
    room = max(width - fixed, 10) if width is not None else None  # a narrow terminal wraps
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        error = row[-1] if room is None or len(row[-1]) <= room else row[-1][: room - 1] + "…"
        lines.append(("  ".join(cells) + "  " + error).rstrip())
    if any(r.operator_resends for r in records):
        lines.append("* resent by an operator (see `alertbridge deliveries show ID`)")
    return "\n".join(lines)


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID | enum.Enum):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def as_json(record: DeliveryRecord) -> dict[str, object]:
    """Every field, JSON's types; ``visible_text`` is what Telegram showed."""
    fields = {k: _plain(v) for k, v in dataclasses.asdict(record).items()}
    return {**fields, "visible_text": visible_text(record.text)}


def show(record: DeliveryRecord, thread: Sequence[DeliveryRecord]) -> str:
    """Everything about one delivery; ``thread``: its group's deliveries in its chat."""
    lines = [f"delivery {record.id}: {record.state.value}"]

    def field(name: str, value: object) -> None:
        lines.append(f"  {name + ':':<18} {value}")

    field("chat", _chat(record) + ("" if record.thread_id is None else " (chat/topic)"))
    field("source", f"{record.source} (receiver {record.receiver})")
    field("group key", record.group_key)
    field("notification", f"{record.notification_key} occurrence {record.occurrence}")
    field("template", record.template + (" · silent" if record.silent else ""))
    field("accepted", _when(record.created_at))
    field("attempts", record.attempts)
    field("last attempt", _when(record.last_attempt_at))
    if record.state in (DeliveryState.QUEUED, DeliveryState.RETRY):
        field("next attempt", _when(record.next_attempt_at))
    field("finished", _when(record.finished_at))
    field("reason", record.reason or "-")
    field("error", record.last_error or "-")
    field("was ambiguous", "yes" if record.was_ambiguous else "no")
    if record.telegram_message_id is not None:
        reply = (
            ""
            if record.reply_to_message_id is None
            else f", a reply to {record.reply_to_message_id}"
        )
        field("telegram message", f"{record.telegram_message_id}{reply}")
    if record.plain_text:
        field("sent as", "plain text (Telegram refused the HTML)")
    if record.digest_id is not None:
        field("folded into", f"the storm digest delivery {record.digest_id}")
    if record.operator_resends:
        field("operator", f"{record.operator_note} ({record.operator_resends} resend(s))")
    lines.append("thread:")
    if record.group_ref is None:
        lines.append("  none (a storm digest is nobody's thread)")
    else:
        anchor = record.thread
        if anchor is None:
            lines.append(f"  group {record.group_ref}: no message of it delivered in this chat yet")
        else:
            status = "open" if anchor.closed_at is None else f"closed {_when(anchor.closed_at)}"
            lines.append(
                f"  group {record.group_ref}: first message {anchor.message_id}, "
                f"opened {_when(anchor.opened_at)}, {status}"
            )
        for other in sorted(thread, key=lambda r: r.id):
            marker = "  ← this one" if other.id == record.id else ""
            message = (
                "" if other.telegram_message_id is None else f" message {other.telegram_message_id}"
            )
            when = _when(other.created_at)
            lines.append(f"  {other.id:>8}  {other.state.value:<10} {when}{message}{marker}")
    lines.append("text, as Telegram shows it:")
    lines += ["  " + line for line in visible_text(record.text).splitlines()]
    return "\n".join(lines)


# -- the commands ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resent:
    delivery_id: int
    #: None: resent; else why not (the row's state, or that it is unknown).
    refused: str | None


async def resend(store: Store, ids: Sequence[int], *, by: str, now: datetime) -> list[Resent]:
    """T.operator_resend on each row that is ambiguous or failed; the others refused."""
    note = f"resent by {by} at {_when(now)} UTC"
    outcomes = []
    for delivery_id in ids:
        state = await store.state_of(delivery_id)
        if state is None:
            outcomes.append(Resent(delivery_id, "no such delivery"))
        elif await store.apply(T.operator_resend, delivery_id, note=note):
            outcomes.append(Resent(delivery_id, None))
        else:
            outcomes.append(
                Resent(
                    delivery_id,
                    f"it is {state.value}; only {' or '.join(RESENDABLE)} deliveries are resent",
                )
            )
    return outcomes


async def list_command(
    store: Store, query: DeliveryQuery, *, json_out: bool, width: int | None
) -> int:
    records = await store.find_deliveries(query)
    if json_out:
        print(json.dumps([as_json(r) for r in records], indent=2))
    elif records:
        print(table(records, width))
    else:
        print("no deliveries match")
    return OK if records else NOTHING


async def show_command(store: Store, delivery_id: int, *, json_out: bool) -> int:
    record = await store.delivery(delivery_id)
    if record is None:
        print(f"alertbridge: no delivery {delivery_id}", file=sys.stderr)
        return NOTHING
    thread: list[DeliveryRecord] = []
    if record.group_ref is not None:
        thread = await store.find_deliveries(
            DeliveryQuery(group_ref=record.group_ref, chat_id=record.chat_id, limit=50)
        )
        thread = [r for r in thread if r.thread_id == record.thread_id]
    if json_out:
        print(
            json.dumps({**as_json(record), "thread_deliveries": [r.id for r in thread]}, indent=2)
        )
    else:
        print(show(record, thread))
    return OK


async def resend_command(store: Store, ids: Sequence[int], *, by: str) -> int:
    outcomes = await resend(store, ids, by=by, now=datetime.now(UTC))
    for outcome in outcomes:
        if outcome.refused is None:
            print(
                f"delivery {outcome.delivery_id}: resent, by {by}; the bridge sends it at its "
                "next scheduler pass"
            )
        else:
            print(f"delivery {outcome.delivery_id}: not resent: {outcome.refused}", file=sys.stderr)
    return OK if all(o.refused is None for o in outcomes) else NOTHING
