"""Two workers share the shards; each shard has one active consumer."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from bridge.queue.amqp import shard_of
from bridge.sandbox.botapi import TelegramDouble
from bridge.shards import owner
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
    database_url, amqp_names, telegram: TelegramDouble, db
) -> None:
    def config(**overrides):
        data = config_dict(database_url, amqp_names, telegram.url, route=ROUTE, **overrides)
        data["amqp"]["shards"] = SHARDS
        return build_config(data)

    receiver = await start_bridge(config(), worker=False)
    # Each worker has its own port for /healthz and /metrics (port 0: its own pick).
    workers = [await start_bridge(config(), receiver=False) for _ in range(2)]
    # Who owns a shard is a hash of the worker ids, which are random per process:
    # with 4 shards, one of two workers owns all of them one time in eight. What
    # must hold is that each shard is consumed by its owner alone.
    owners: dict[int, str] = {}
    try:
        # The first worker started alone and took every shard; at its next
        # heartbeat it sees the second and steps back from that one's shards.
        async def consumed_as_owned() -> bool:
            ids = sorted(r["worker_id"] for r in await db.fetch("SELECT worker_id FROM workers"))
            if len(ids) != 2:
                return False
            owners.update({shard: owner(shard, ids) for shard in range(SHARDS)})
            found = await asyncio.to_thread(active_consumers, amqp_names["queue"])
            actives = list(found.values())
            owning = len(set(owners.values()))
            return all(len(c) == 1 for c in actives) and len(set().union(*actives)) == owning

        await wait_until(consumed_as_owned, timeout=30, interval=1.0)

        for i, chat in enumerate(CHATS):
            await receiver.post(
                "/alertmanager", webhook(alert(f"S{i}", labels={"chat": str(chat)}))
            )
        await wait_until(lambda: len(telegram.sent_messages()) == len(CHATS), timeout=30)
        delivered = [
            w.metrics.deliveries_finished.labels("delivered", "ok")._value.get() for w in workers
        ]
        assert sum(delivered) == len(CHATS), delivered
        # Each worker that owns a shard one of the chats hashes to sent something.
        busy = {owners[shard_of(chat, SHARDS)] for chat in CHATS}
        assert sum(1 for d in delivered if d > 0) == len(busy), (delivered, owners)
        assert await states(database_url) == {"delivered": len(CHATS)}
    finally:
        for w in workers:
            await w.shutdown()
        await receiver.shutdown()
