"""Which worker owns which shard: rendezvous hashing over the live workers.

Every worker computes the same answer from the same list (the store's
``workers`` table), so they agree without talking to each other. When the
list changes, only the shards of the worker that came or went move. A worker
that no longer owns a shard steps back from it (re-subscribes at the back
of its single-active-consumer line), and the owner, already subscribed,
becomes the active consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Protocol

from bridge.errors import StoreUnavailable
from bridge.ratelimit import RateLimiter
from bridge.store import Store

log = logging.getLogger(__name__)

HEARTBEAT = timedelta(seconds=5)
#: A worker not seen for this long is gone; its shards move.
TTL = timedelta(seconds=15)
#: After the worker list changes, step back from foreign shards for this many
#: heartbeats: a newcomer may subscribe a little after it first appears.
SETTLE_BEATS = 3


def owner(shard: int, workers: Sequence[str]) -> str:
    """The worker with the highest hash for ``shard``."""
    return max(workers, key=lambda w: hashlib.sha256(f"{w}/{shard}".encode()).digest())


def owned(me: str, workers: Sequence[str], shards: int) -> set[int]:
    return {shard for shard in range(shards) if owner(shard, workers) == me}


class ShardQueue(Protocol):
    async def step_back(self, shards: Iterable[int]) -> None: ...


class Rebalancer:
    def __init__(
        self,
        worker_id: str,
        shards: int,
        store: Store,
        queue: ShardQueue,
        limiter: RateLimiter | None,
    ) -> None:
        self.worker_id = worker_id
        self._shards = shards
        self._store = store
        self._queue = queue
        self._limiter = limiter
        self._workers: list[str] = []
        self._settling = 0

    async def beat(self) -> set[int]:
        """One heartbeat; returns the shards this worker owns now."""
        workers = await self._store.heartbeat(self.worker_id, ttl=TTL)
        mine = owned(self.worker_id, workers, self._shards)
        if workers != self._workers:
            log.info(
                "workers now %d (%s); this one owns %d of %d shards",
                len(workers),
                ", ".join(workers),
                len(mine),
                self._shards,
            )
            self._workers = workers
            self._settling = SETTLE_BEATS
        if self._limiter is not None:
            self._limiter.set_share(len(mine) / self._shards)
        if self._settling > 0:
            self._settling -= 1
            await self._queue.step_back(set(range(self._shards)) - mine)
        return mine

    async def first_share(self) -> set[int]:
        """Register and return this worker's shards, before subscribing."""
        self._workers = await self._store.heartbeat(self.worker_id, ttl=TTL)
        self._settling = SETTLE_BEATS
        mine = owned(self.worker_id, self._workers, self._shards)
        if self._limiter is not None:
            self._limiter.set_share(len(mine) / self._shards)
        return mine

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT.total_seconds())
                if stop.is_set():
                    break
                try:
                    await self.beat()
                except Exception as exc:  # noqa: BLE001 - store or broker away: next beat
                    log.warning("shard heartbeat: %s", exc)
        finally:
            with contextlib.suppress(StoreUnavailable):
                await self._store.leave(self.worker_id)
