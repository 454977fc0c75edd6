"""`alertbridge deliveries` beside a running standalone bridge: it reads the SQLite
file and resends a row without the bridge's lock, and the bridge's own scheduler
and worker send the resent row again."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import operator
from bridge.cli import main
from bridge.delivery import DeliveryState, Reason, T, ThreadChange
from bridge.errors import BridgeError, StoreUnavailable
from bridge.store.base import DeliveryQuery, DeliveryRecord, NewDelivery
from bridge.store.sqlite import SqliteStore
from bridge.telegram import Ambiguous
from tests.unit.fakes import FakeClock, Line, accept, notification

GROUP = -1001
HTML = "🔥 <b>DiskFull</b> &amp; co\non &lt;host&gt;"


# -- the resent row goes out again, through the bridge's own line ------------------------


async def test_a_resent_ambiguous_row_is_sent_again_by_the_running_bridge(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = Line(clock, store, db_path)
    bridge.sender.script(Ambiguous(Reason.TIMEOUT, "no answer"), chat=GROUP)
    [d] = await bridge.receive(notification("DiskFull"), [GROUP])
    await bridge.settle(step=1, within=60)
    assert bridge.rows()[d]["state"] == "ambiguous" and bridge.sender.copies(d) == 1

    # The operator's command, a second connection beside the bridge's (which holds the lock).
    ops = await SqliteStore.open_for_operator(db_path, write=True, clock=clock.time)
    try:
        done = await operator.resend(ops, [d], by="alice", now=datetime.now(UTC))
    finally:
        await ops.close()
    assert done == [operator.Resent(d, None)]

    # One scheduler pass, no time passing: the row is due and published now.
    assert await bridge.scheduler.tick() == 1
    await bridge.drain()
    row = bridge.rows()[d]
    assert row["state"] == "delivered" and row["attempts"] == 2 and row["was_ambiguous"] == 1
    assert row["operator_note"].startswith("resent by alice at ")
    assert bridge.sender.copies(d) == 2
    assert bridge.metric("alertbridge_operator_resends_total") == 1


async def test_the_operator_s_read_only_connection_cannot_write(
    store: SqliteStore, db_path: Path
) -> None:
    [(d, _)] = await accept(store, notification("DiskFull"), [GROUP])
    ops = await SqliteStore.open_for_operator(db_path)
    try:
        assert [r.id for r in await ops.find_deliveries(DeliveryQuery())] == [d]
        with pytest.raises(StoreUnavailable, match="readonly"):
            await ops.apply(T.give_back, d, delay=timedelta(0))
    finally:
        await ops.close()


async def test_no_file_is_created_for_a_wrong_path(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="no SQLite store at"):
        await SqliteStore.open_for_operator(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


# -- the command, in this process, while a store holds the file ----------------------------


@pytest.fixture
def standalone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[int]]]:
    """A standalone bridge's file, its lock held (as by `serve`), with one delivered,
    one ambiguous and one failed delivery; the config file and the ids."""
    for name in list(os.environ):
        if name.startswith("ALERTBRIDGE_"):
            monkeypatch.delenv(name)
    db = tmp_path / "alertbridge.db"
    config = tmp_path / "alertbridge.yml"
    config.write_text(f'telegram:\n  token: "123:ABC"\nsqlite_path: "{db}"\nroute:\n  chats: [1]\n')
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with asyncio.Runner() as runner:
        store = runner.run(SqliteStore.open(db))
        ids = runner.run(_three_deliveries(store))
        try:
            yield config, ids
        finally:
            # main() sends the logs to this test's captured stderr: not the next test's.
            root.handlers[:] = handlers
            root.setLevel(level)
            runner.run(store.close())


async def _three_deliveries(store: SqliteStore) -> list[int]:
    await store.migrate()
    accepted = await store.accept(
        uuid.uuid4(),
        uuid.uuid4(),
        notification("DiskFull"),
        [NewDelivery(chat, None, False, "default", HTML) for chat in (GROUP, -1002, -1003)],
        dedup_window=timedelta(minutes=5),
        republish_after=timedelta(seconds=30),
    )
    ids = [d for d, _ in accepted.deliveries]
    delivered, unsure, failed = ids
    for d in ids:
        assert await store.claim(d, lease=timedelta(seconds=30))
        assert await store.apply(T.begin_send, d)
    assert await store.mark_delivered(
        delivered, 55, plain_text=False, reply_to=None, thread=ThreadChange.OPEN
    )
    assert await store.apply(T.ambiguous_assume_sent, unsure, reason=Reason.TIMEOUT, error="x")
    assert await store.apply(T.failed, failed, reason=Reason.FORBIDDEN, error="bot was blocked")
    return ids


def test_the_listing_while_the_bridge_holds_the_file(
    standalone: tuple[Path, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, (delivered, unsure, failed) = standalone
    assert main(["deliveries", "-c", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATE", "CHAT", "SOURCE"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [str(failed), "failed", "-1003"],
        [str(unsure), "ambiguous", "-1002"],
        [str(delivered), "delivered", "-1001"],
    ]
    assert "forbidden: bot was blocked" in lines[1]

    assert main(["deliveries", "-c", str(config), "--state", "ambiguous", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["id"] == unsure and row["state"] == "ambiguous" and row["reason"] == "timeout"

    assert main(["deliveries", "-c", str(config), "--chat", "42"]) == 1
    assert "no deliveries match" in capsys.readouterr().out


def test_show_prints_the_text_as_telegram_shows_it_and_the_thread(
    standalone: tuple[Path, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, (delivered, _, _) = standalone
    assert main(["deliveries", "-c", str(config), "show", str(delivered)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"delivery {delivered}: delivered")
    assert "first message 55" in out and "← this one" in out
    # The stored HTML, as Telegram renders it: no tags, entities decoded.
    assert "text, as Telegram shows it:\n  🔥 DiskFull & co\n  on <host>\n" in out
    assert main(["deliveries", "-c", str(config), "show", "999"]) == 1
    assert "no delivery 999" in capsys.readouterr().err


def test_resend_takes_ambiguous_and_failed_and_refuses_the_rest(
    standalone: tuple[Path, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, (delivered, unsure, failed) = standalone
    args = ["deliveries", "-c", str(config), "resend"]
    assert main([*args, str(unsure), str(failed), "--by", "alice"]) == 0
    assert capsys.readouterr().out.count("resent, by alice") == 2
    assert main([*args, str(delivered)]) == 1
    err = capsys.readouterr().err
    assert f"delivery {delivered}: not resent: it is delivered" in err
    assert main(["deliveries", "-c", str(config), "--state", "retry", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == {unsure, failed}
    assert all(r["operator_note"].startswith("resent by alice at ") for r in rows)


def test_usage_mistakes_exit_2_and_a_producer_without_messages_1(
    standalone: tuple[Path, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = standalone
    assert main(["deliveries", "-c", str(config), "--since", "two hours"]) == 2
    assert "--since 'two hours'" in capsys.readouterr().err
    # The deliveries here are alerts: a producer's filter (source producer:NAME) finds none.
    assert main(["deliveries", "-c", str(config), "--producer", "backup"]) == 1
    both = ["deliveries", "-c", str(config), "--producer", "backup", "--source", "grafana"]
    assert main(both) == 2
    assert "--producer and --source" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["deliveries", "-c", str(config), "--state", "lost"])
    assert exited.value.code == 2


def test_durations() -> None:
    assert operator.parse_since("2h") == timedelta(hours=2)
    assert operator.parse_since("1h30m") == timedelta(minutes=90)
    for wrong in ("2", "h", "2 h", "-2h", "2hours"):
        with pytest.raises(BridgeError):
            operator.parse_since(wrong)


def _record(**fields: object) -> DeliveryRecord:
    base: dict[str, object] = dict(
        id=7, state=DeliveryState.FAILED, chat_id=-1001, thread_id=None, source="alertmanager",
        receiver="telegram", group_key="g", notification_key=None, occurrence=1,
        template="default", text="<b>Disk</b> &amp; more", silent=False, plain_text=False,
        attempts=3, created_at=None, last_attempt_at=None, next_attempt_at=None,
        finished_at=None, reason="forbidden", last_error="x" * 200, telegram_message_id=None,
        reply_to_message_id=None, was_ambiguous=False, group_ref=None, digest_id=None,
        operator_note=None, operator_resends=0,
    )  # fmt: skip
    return DeliveryRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_the_table_fits_the_terminal() -> None:
    text = operator.table([_record(), _record(id=8, thread_id=5)], width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert text.splitlines()[2].split()[2] == "-1001/5"
    assert "…" in text
    assert "x" * 200 in operator.table([_record()], width=None)  # into a pipe: whole


def test_json_carries_the_visible_text() -> None:
    assert operator.as_json(_record())["visible_text"] == "Disk & more"
