"""`alertbridge demo`: one command, no services, and the chat page's buttons reach the bridge."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from typing import Any

import httpx

from tests.conftest import wait_until
from tests.processes import demo_process, running_demo


def find(state: dict[str, Any], chat_id: int, message_id: int) -> dict[str, Any]:
    (chat,) = [c for c in state["chats"] if c["chat_id"] == chat_id]
    (message,) = [m for m in chat["messages"] if m["message_id"] == message_id]
    return message


def test_demo_delivers_the_samples_and_exits_when_asked() -> None:
    with demo_process("--exit-when-done") as (process, printed):
        process.wait(timeout=120)
        output = printed.text()
    assert process.returncode == 0, output
    assert "chat page: http://127.0.0.1:" in output
    # 3 group messages, the storm's first alert and one digest for the other 59.
    assert "deliveries: 5 delivered, 58 suppressed" in output, output


async def test_ack_and_silence_from_the_chat_page_go_through_the_bridge() -> None:
    async with running_demo() as (process, client):
        state = (await client.get("/sandbox/state")).json()
        first_storm_alert = find(state, -1002, 1)
        ack, silence_1h, _ = (b["data"] for b in first_storm_alert["buttons"][0])

        assert (await client.post(
            "/sandbox/press", json={"chat_id": -1002, "message_id": 1, "data": ack}
        )).status_code == 200  # fmt: skip

        async def acked() -> bool:
            message = find((await client.get("/sandbox/state")).json(), -1002, 1)
            return "Acked by" in message["text"]

        await wait_until(acked, timeout=20)
        message = find((await client.get("/sandbox/state")).json(), -1002, 1)
        assert message["edited"]
        assert not any(b["data"] == ack for b in message["buttons"][0])  # no second ack

        await client.post(
            "/sandbox/press", json={"chat_id": -1002, "message_id": 1, "data": silence_1h}
        )

        async def silenced() -> bool:
            return bool((await client.get("/sandbox/state")).json()["silences"])

        await wait_until(silenced, timeout=20)
        (silence,) = (await client.get("/sandbox/state")).json()["silences"]
        assert {"name": "alertname", "value": "ReplicaLag0", "isRegex": False}.items() <= next(
            m for m in silence["matchers"] if m["name"] == "alertname"
        ).items()
        assert silence["status"]["state"] == "active"

        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 30)
        assert process.returncode == 0


async def test_the_send_command_the_demo_prints_delivers_a_message() -> None:
    with demo_process() as (process, output):
        sandbox = await output.address()

        def printed() -> str | None:
            for line in output.lines:
                if b"alertbridge send" in line:
                    return line.decode()
            return None

        await wait_until(printed, timeout=60)
        line = printed()
        assert line is not None
        settings = dict(re.findall(r"(ALERTBRIDGE_\w+)=(\S+)", line))
        assert set(settings) == {"ALERTBRIDGE_URL", "ALERTBRIDGE_PRODUCER_TOKEN"}
        command = shlex.split(line[line.index("alertbridge send") :])
        sent = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", *command[1:]],
            env={**os.environ, **settings},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        message_id = sent.stdout.strip()
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", "status", "--wait", "30", message_id],
            env={**os.environ, **settings},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        async with httpx.AsyncClient(base_url=sandbox, timeout=5) as client:
            chats = (await client.get("/sandbox/state")).json()["chats"]
        texts = [m["text"] for c in chats if c["chat_id"] == -1001 for m in c["messages"]]
        assert texts.count("Export ready") == 1
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 30)
