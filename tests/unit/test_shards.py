"""Shard ownership: everyone computes the same, shares are even, and a
worker coming or going moves only its own shards."""

from __future__ import annotations

from bridge.shards import owned, owner

WORKERS = [f"host-{i}" for i in range(4)]


def test_every_shard_has_exactly_one_owner_and_shares_are_close() -> None:
    shares = [owned(w, WORKERS, 256) for w in WORKERS]
    assert set().union(*shares) == set(range(256))
    assert sum(len(s) for s in shares) == 256
    assert all(40 <= len(s) <= 90 for s in shares), [len(s) for s in shares]


def test_a_worker_leaving_moves_only_its_shards() -> None:
    before = {shard: owner(shard, WORKERS) for shard in range(64)}
    after = {shard: owner(shard, WORKERS[:3]) for shard in range(64)}
    moved = {shard for shard in before if before[shard] != after[shard]}
    assert moved == {shard for shard, w in before.items() if w == "host-3"}
