"""Two workers share the shards; each shard has one active consumer."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import (
    build_config,
    config_dict,
    start_bridge,
    states,
    wait_until,
)
from tests.payloads import alert, webhook

SHARDS = 4


def active_consumers(queue_prefix: str) -> dict[str, set[str]]:
    """shard queue → channel pids of its active consumers (rabbitmqctl)."""
    out = subprocess.run(
        ["rabbitmqctl", "list_consumers", "-q", "queue_name", "channel_pid", "active"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    found: dict[str, set[str]] = {f"{queue_prefix}.{i:02d}": set() for i in range(SHARDS)}
    for line in out.splitlines():
        queue, channel, active = line.split("\t")
        if queue in found and active == "true":
            found[queue].add(channel)
    return found


CHATS = [-1000 - i for i in range(16)]
ROUTE = {
    "chats": [-1],
    "routes": [{"matchers": [f'chat="{chat}"'], "chats": [chat]} for chat in CHATS],
}


@pytest.mark.slow
async def test_two_workers_share_the_shards_one_active_consumer_each(
    database_url, amqp_names, telegram: TelegramDouble
) -> None:
    def config(**overrides):
        data = config_dict(database_url, amqp_names, telegram.url, route=ROUTE, **overrides)
        data["amqp"]["shards"] = SHARDS
        return build_config(data)

    receiver = await start_bridge(config(), worker=False)
    # Each worker has its own port for /healthz and /metrics (port 0: its own pick).
    workers = [await start_bridge(config(), receiver=False) for _ in range(2)]
    try:
        # The first worker started alone and took every shard; at its next
        # heartbeat it sees the second and steps back from that one's shards.
        async def split_between_both() -> bool:
            found = await asyncio.to_thread(active_consumers, amqp_names["queue"])
            actives = list(found.values())
            return all(len(c) == 1 for c in actives) and len(set().union(*actives)) == 2

        await wait_until(split_between_both, timeout=30, interval=1.0)

        for i, chat in enumerate(CHATS):
            await receiver.post(
                "/alertmanager", webhook(alert(f"S{i}", labels={"chat": str(chat)}))
            )
        await wait_until(lambda: len(telegram.sent_messages()) == len(CHATS), timeout=30)
        delivered = [
            w.metrics.deliveries_finished.labels("delivered", "ok")._value.get() for w in workers
        ]
        assert sum(delivered) == len(CHATS) and all(d > 0 for d in delivered), delivered
        assert await states(database_url) == {"delivered": len(CHATS)}
    finally:
        for w in workers:
            await w.shutdown()
        await receiver.shutdown()
