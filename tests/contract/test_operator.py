"""What an operator sees of the deliveries, and the resend, alike on both stores:
the listing and its filters, one delivery with its thread, and T.operator_resend
(only from ambiguous or failed; the row published again at once)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import operator
from bridge.cli import main
from bridge.delivery import DeliveryState, Reason, T
from bridge.models import Status
from bridge.store import PostgresStore, Store
from bridge.store.base import DeliveryQuery
from tests.contract.test_store import (
    LATER,
    accept,
    deliver,
    fail,
    notification,
    open_store,
    send,
    to,
)

S = DeliveryState
NOW = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


@pytest.fixture(params=["postgres", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(request.param, tmp_path) as opened:
        yield opened


async def ambiguous(store: Store, d: int) -> None:
    assert await send(store, d) is not None
    assert await store.apply(
        T.ambiguous_assume_sent, d, reason=Reason.TIMEOUT, error="no answer in 30 s"
    )


async def test_the_listing_is_newest_first_and_filters(store: Store) -> None:
    first, second = await accept(store, to(1, 2))
    (third,) = await accept(store, to(1), n=notification("Other"))
    await ambiguous(store, second)

    everything = await store.find_deliveries(DeliveryQuery())
    assert [r.id for r in everything] == [third, second, first]
    assert [r.id for r in await store.find_deliveries(DeliveryQuery(limit=2))] == [third, second]
    by_state = await store.find_deliveries(DeliveryQuery(state=S.AMBIGUOUS))
    assert [(r.id, r.state, r.chat_id) for r in by_state] == [(second, S.AMBIGUOUS, 2)]
    assert by_state[0].attempts == 1 and by_state[0].reason == "timeout"
    assert by_state[0].last_error == "no answer in 30 s" and by_state[0].last_attempt_at
    by_chat = await store.find_deliveries(DeliveryQuery(chat_id=1))
    assert [r.id for r in by_chat] == [third, first]
    assert [r.source for r in by_chat] == ["alertmanager", "alertmanager"]
    assert await store.find_deliveries(DeliveryQuery(source="grafana")) == []
    assert len(await store.find_deliveries(DeliveryQuery(source="alertmanager"))) == 3
    assert len(await store.find_deliveries(DeliveryQuery(since=timedelta(hours=1)))) == 3
    assert await store.find_deliveries(DeliveryQuery(since=timedelta(0))) == []


async def test_one_delivery_shows_everything_and_its_thread(store: Store) -> None:
    group = uuid.uuid4()
    (opening,) = await accept(store, to(7), group=group)
    claimed = await send(store, opening)
    assert claimed is not None and await deliver(store, claimed, 500)
    (reply,) = await accept(store, to(7), group=group, n=notification(status=Status.RESOLVED))
    await ambiguous(store, reply)

    record = await store.delivery(reply)
    assert record is not None
    assert record.state is S.AMBIGUOUS and record.was_ambiguous and record.chat_id == 7
    assert record.text == "text for 7" and record.template == "default"
    assert record.group_ref == group and record.finished_at is not None
    assert record.group_key == '{}:{alertname="DiskFull"}' and record.receiver == "telegram"
    assert record.thread is not None and record.thread.message_id == 500
    assert record.thread.closed_at is None and record.thread.opened_at is not None
    assert record.operator_note is None and record.operator_resends == 0
    first = await store.delivery(opening)
    assert first is not None and first.telegram_message_id == 500
    assert await store.delivery(10**9) is None
    thread = await store.find_deliveries(DeliveryQuery(group_ref=group, chat_id=7))
    assert [r.id for r in thread] == [reply, opening]


async def test_an_operator_resend_publishes_an_ambiguous_row_again_with_a_note(
    store: Store,
) -> None:
    (d,) = await accept(store, to(42))
    await ambiguous(store, d)
    assert await store.take_due(limit=10, republish_after=LATER) == []

    outcome = await operator.resend(store, [d], by="alice", now=NOW)
    assert outcome == [operator.Resent(d, None)]
    record = await store.delivery(d)
    assert record is not None and record.state is S.RETRY
    assert record.operator_note == "resent by alice at 2026-12-01 16:00:00 UTC"
    assert record.operator_resends == 1 and record.was_ambiguous
    assert record.finished_at is None and record.attempts == 1
    # Due now: the running scheduler publishes it at its next pass.
    assert await store.take_due(limit=10, republish_after=LATER) == [(d, 42)]
    assert await store.operator_resends() == 1
    # ... and a worker sends it: a new attempt.
    claimed = await send(store, d)
    assert claimed is not None and claimed.attempts == 1
    assert await deliver(store, claimed, 901)
    done = await store.delivery(d)
    assert done is not None and done.state is S.DELIVERED and done.attempts == 2


async def test_a_failed_row_is_resent_and_a_delivered_one_refused(store: Store) -> None:
    failed, delivered = await accept(store, to(1, 2))
    assert await send(store, failed) is not None and await fail(store, failed, "blocked")
    claimed = await send(store, delivered)
    assert claimed is not None and await deliver(store, claimed, 77)

    outcome = await operator.resend(store, [failed, delivered, 10**9], by="bob", now=NOW)
    assert outcome[0] == operator.Resent(failed, None)
    assert outcome[1].refused == "it is delivered; only ambiguous or failed deliveries are resent"
    assert outcome[2].refused == "no such delivery"
    assert await store.state_of(failed) is S.RETRY
    assert await store.state_of(delivered) is S.DELIVERED
    record = await store.delivery(delivered)
    assert record is not None and record.operator_note is None and record.operator_resends == 0
    assert await store.operator_resends() == 1


async def test_the_command_on_postgres_lists_and_resends(
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("ALERTBRIDGE_"):
            monkeypatch.delenv(name)
    store = await PostgresStore.connect(database_url)
    try:
        await store.migrate()
        (d,) = await accept(store, to(42))
        await ambiguous(store, d)
    finally:
        await store.close()
    config = tmp_path / "alertbridge.yml"
    config.write_text(
        f'telegram:\n  token: "123:ABC"\ndatabase_url: "{database_url}"\n'
        'amqp_url: "amqp://guest:guest@127.0.0.1/"\nroute:\n  chats: [1]\n'
    )
    args = ["deliveries", "-c", str(config)]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert await asyncio.to_thread(main, [*args, "--state", "ambiguous", "--json"]) == 0
        assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [d]
        assert await asyncio.to_thread(main, [*args, "resend", str(d), "--by", "carol"]) == 0
        assert await asyncio.to_thread(main, [*args, "show", str(d)]) == 0
        assert "resent by carol at" in capsys.readouterr().out
    finally:
        # main() sends the logs to this test's captured stderr: not the next test's.
        root.handlers[:] = handlers
        root.setLevel(level)
