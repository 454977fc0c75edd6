"""See the bridge do its main job, offline, in one command.

Starts the Telegram Bot API double, runs `alertbridge serve` against it with
the local PostgreSQL and RabbitMQ, fires the sample alert group from
alertmanager-examples/ (twice, as both replicas of an HA pair would), resolves
it, and prints the chat as Telegram would show it.

    bash .ci/setup && .venv/bin/python -m tests.demo
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import asyncpg
import httpx

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import PG_ADMIN_URL, TOKEN
from tests.processes import bridge_process, local_config

DATABASE = "alertbridge_demo"
CHAT = -1001
PAYLOADS = Path(__file__).resolve().parent.parent / "alertmanager-examples" / "payloads"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


async def fresh_database() -> str:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{DATABASE}"


async def main() -> None:
    telegram = TelegramDouble(token=TOKEN)
    await telegram.start()
    database_url = await fresh_database()
    config = local_config(database_url, telegram.url, "alertbridge-demo", CHAT)
    step(f"alertbridge serve  (Bot API: {telegram.url})")
    async with bridge_process(config):
        await fire(config["listen"], telegram)
    await telegram.stop()


async def fire(listen: str, telegram: TelegramDouble) -> None:
    firing = json.loads((PAYLOADS / "firing.json").read_text())
    replica = {**firing, "externalURL": "http://alertmanager-1.example:9093"}
    resolved = json.loads((PAYLOADS / "resolved.json").read_text())
    async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=10) as client:
        for label, payload in (
            ("firing, from alertmanager-0", firing),
            ("the same, from alertmanager-1 (HA replica)", replica),
            ("the same again, an Alertmanager retry", firing),
            ("resolved", resolved),
        ):
            answer = (await client.post("/alertmanager", json=payload)).json()
            verdict = "duplicate, dropped" if answer["duplicate"] else "stored and queued"
            step(f"POST /alertmanager: {label} -> {verdict}")
        await telegram.wait_for_messages(2, timeout=30)
        await asyncio.sleep(0.5)  # nothing else should arrive; give it the chance to
        step(f"chat {CHAT}, as Telegram shows it ({len(telegram.sent_messages())} messages)")
        for message in telegram.sent_messages(CHAT):
            print(f"\n--- message {message.message_id}")
            print(textwrap.indent(message.text, "  "))
        metrics = (await client.get("/metrics")).text
    step("metrics (GET /metrics)")
    for line in metrics.splitlines():
        if line.startswith(
            ("alertbridge_webhooks_received_total", "alertbridge_deliveries_finished")
        ):
            print(" ", line)


if __name__ == "__main__":
    asyncio.run(main())
