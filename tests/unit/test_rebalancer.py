"""Shares from heartbeats in the SQLite store, on a fake clock: who owns which
shard, the per-bot limit split by those shares, and stepping back from the rest."""

from __future__ import annotations

import asyncio

from bridge.config import RateLimitConfig
from bridge.ratelimit import RateLimiter
from bridge.shards import SETTLE_BEATS, TTL, Rebalancer, owned
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import FakeClock, FakeShardQueue

SHARDS = 16
PER_BOT = 20.0


def sends_admitted_at_once(limiter: RateLimiter) -> int:
    """How many sends to distinct chats the limiter lets out in the same instant: the
    per-bot window, scaled by the worker's share."""
    chat = 0
    while limiter.wait_to_send(chat + 1) == 0:
        chat += 1
    return chat


def worker(
    name: str, store: SqliteStore, clock: FakeClock
) -> tuple[Rebalancer, FakeShardQueue, RateLimiter]:
    limiter = RateLimiter(lambda: RateLimitConfig(per_bot_per_second=PER_BOT), clock.monotonic)
    queue = FakeShardQueue()
    return Rebalancer(name, SHARDS, store, queue, limiter), queue, limiter


async def test_shares_follow_the_live_workers(clock: FakeClock, store: SqliteStore) -> None:
    one, one_queue, one_limiter = worker("w1", store, clock)
    assert await one.first_share() == set(range(SHARDS))
    assert sends_admitted_at_once(one_limiter) == PER_BOT

    clock.advance(1)
    two, _, two_limiter = worker("w2", store, clock)
    theirs = await two.first_share()
    mine = await one.beat()
    assert mine == owned("w1", ["w1", "w2"], SHARDS) and theirs == set(range(SHARDS)) - mine
    assert mine and theirs
    # The per-bot limit is split by the share of shards each owns.
    clock.advance(5)
    assert sends_admitted_at_once(one_limiter) == int(PER_BOT * len(mine) / SHARDS)
    assert sends_admitted_at_once(two_limiter) == int(PER_BOT * len(theirs) / SHARDS)
    # It steps back from the shards that moved, for a few beats while the other subscribes.
    for _ in range(SETTLE_BEATS + 2):
        clock.advance(5)
        await two.beat()
        assert await one.beat() == mine
    assert one_queue.stepped_back == [theirs] * SETTLE_BEATS

    # w2 stops beating: after the TTL its shards come back.
    clock.advance(TTL.total_seconds() + 1)
    assert await one.beat() == set(range(SHARDS))
    clock.advance(5)
    assert sends_admitted_at_once(one_limiter) == PER_BOT
    assert one_queue.stepped_back[-1] == set()


async def test_a_worker_that_stops_leaves_at_once(clock: FakeClock, store: SqliteStore) -> None:
    one, _, _ = worker("w1", store, clock)
    two, _, _ = worker("w2", store, clock)
    await one.first_share()
    await two.first_share()
    stop = asyncio.Event()
    stop.set()
    await two.run(stop)  # stopping: it says goodbye without waiting for the TTL
    assert await one.beat() == set(range(SHARDS))
