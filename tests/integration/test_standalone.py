"""Standalone mode: no PostgreSQL, no RabbitMQ, one `alertbridge serve` and a SQLite file.

The same guarantees on one node: a duplicate is dropped, every delivery is
sent once, and kill -9 mid-stream loses nothing: the restarted process finds
the unfinished rows in the file and sends them, never twice outside
``ambiguous``.
"""

from __future__ import annotations

import collections
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import REPO, config_dict, wait_until
from tests.payloads import alert, webhook
from tests.processes import spawn_bridge, start_bridge_process

NAME = re.compile(r"Solo\d{4}")


def standalone_config(tmp_path: Path, telegram_url: str) -> dict[str, Any]:
    return config_dict(
        None, None, telegram_url, sqlite_path=tmp_path / "alertbridge.db", amqp={"prefetch": 4}
    )


def serve(config_path: Path) -> subprocess.Popen[bytes]:
    """`alertbridge serve`, not waited for: for a process that must not start."""
    return spawn_bridge(
        config_path, log_level="warning", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT state, text FROM deliveries").fetchall()


def counts(db: Path) -> collections.Counter[str]:
    return collections.Counter(state for state, _ in rows(db))


@pytest.mark.slow
async def test_kill_9_of_standalone_serve_mid_stream_loses_nothing(
    telegram: TelegramDouble, tmp_path: Path
) -> None:
    telegram.latency = 0.03
    data = standalone_config(tmp_path, telegram.url)
    # Far beyond the test's patience: only the restart's catch-up from the
    # file can bring back the wake-ups that died with the process.
    data["delivery"]["republish_after"] = "10m"
    config_path = tmp_path / "alertbridge.yml"
    config_path.write_text(yaml.safe_dump(data))
    db = Path(data["sqlite_path"])
    total = 300

    served = await start_bridge_process(config_path, log_level="warning")
    victim = served.process
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            for i in range(total):
                answer = await client.post("/alertmanager", json=webhook(alert(f"Solo{i:04d}")))
                assert answer.status_code == 200, answer.text
        await wait_until(lambda: len(telegram.sent_messages()) >= 50, timeout=60)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert len(telegram.sent_messages()) < total, "the stream ended before the kill"
    finally:
        if victim.poll() is None:
            victim.kill()

    survivor = (await start_bridge_process(config_path, log_level="warning")).process
    try:

        def settled() -> bool:
            c = counts(db)
            return sum(c.values()) == total and not c.keys() & {"queued", "sending", "retry"}

        await wait_until(settled, timeout=90, interval=0.2)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=30)

    final = counts(db)
    assert set(final) <= {"delivered", "ambiguous"}, final
    sent = collections.Counter(
        m.group(0) for msg in telegram.sent_messages() if (m := NAME.search(msg.text))
    )
    for state, text in rows(db):
        name = NAME.search(text).group(0)  # type: ignore[union-attr]
        if state == "delivered":
            assert sent[name] == 1, f"{name}: delivered but sent {sent[name]} times"
        else:
            assert sent[name] <= 1, f"{name}: ambiguous and sent {sent[name]} times"
    assert final.get("ambiguous", 0) <= 4  # only what was in flight at the kill


async def test_standalone_drops_a_duplicate_and_refuses_a_second_process(
    telegram: TelegramDouble, tmp_path: Path
) -> None:
    data = standalone_config(tmp_path, telegram.url)
    config_path = tmp_path / "alertbridge.yml"
    config_path.write_text(yaml.safe_dump(data))
    served = await start_bridge_process(config_path, log_level="warning")
    first = served.process
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            payload = webhook(alert("SoloDup"))
            assert not (await client.post("/alertmanager", json=payload)).json()["duplicate"]
            assert (await client.post("/alertmanager", json=payload)).json()["duplicate"]
        await telegram.wait_for_messages(1, timeout=20)

        second = serve(config_path)  # the same file: its own port, the same SQLite
        _, stderr = second.communicate(timeout=30)
        assert second.returncode == 2
        assert b"in use by another alertbridge process" in stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert len(telegram.sent_messages()) == 1


def test_standalone_receiver_alone_is_refused_with_what_to_do(tmp_path: Path) -> None:
    data = standalone_config(tmp_path, "http://127.0.0.1:9")
    config_path = tmp_path / "alertbridge.yml"
    config_path.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "receiver", "-c", str(config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "use `alertbridge serve`" in result.stderr
