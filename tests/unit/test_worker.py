"""The worker on fake edges: attempts, ambiguity, kills, 429s, storms and threads.

Each test drives the production Worker, Pacer and Scheduler over the real SQLite
store; Telegram, the queue and time are fakes (tests/unit/fakes.py), so a
two-minute rate limit takes milliseconds and no test sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import DeliveryConfig, RateLimitConfig
from bridge.delivery import Delivery, Reason, T, Transition
from bridge.models import Status
from bridge.pacer import STORM_GATHER
from bridge.producers import message_key
from bridge.store import NewDelivery
from bridge.store.base import NewMessage
from bridge.store.sqlite import SqliteStore
from bridge.telegram import Ambiguous, Failed, Retry
from tests.unit.fakes import Die, FakeClock, Killed, Line, Step, notification

PRIVATE = 42  # a private chat: one message a second
GROUP = -1001  # a group chat: also twenty a minute
OTHER_GROUP = -1002
THIRD_GROUP = -1003
LEASE = timedelta(seconds=60)


def settings(**overrides: object) -> DeliveryConfig:
    base: dict[str, object] = {
        "lease": LEASE,
        "republish_after": timedelta(seconds=30),
        "backoff_initial": timedelta(seconds=1),
        "backoff_max": timedelta(seconds=4),
    }
    return DeliveryConfig.model_validate({**base, **overrides})


def limits(**overrides: object) -> RateLimitConfig:
    return RateLimitConfig.model_validate(overrides)


def line(
    clock: FakeClock,
    store: SqliteStore,
    db_path: Path,
    *,
    paced: RateLimitConfig | None = None,
    **delivery: object,
) -> Line:
    return Line(clock, store, db_path, settings=settings(**delivery), limits=paced)


# -- attempts --------------------------------------------------------------------


async def test_a_delivery_that_keeps_failing_fails_after_max_attempts(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, max_attempts=3)
    bridge.sender.script(*[Retry(Reason.SERVER_ERROR, "502 Bad Gateway")] * 3, chat=GROUP)
    [d] = await bridge.receive(notification("DiskFull"), [GROUP])

    await bridge.settle(step=0.5, within=30)
    row = bridge.rows()[d]
    assert (row["state"], row["reason"], row["attempts"]) == (
        "failed",
        Reason.ATTEMPTS_EXHAUSTED,
        3,
    )
    assert "gave up after 3 attempts" in row["last_error"]
    assert len(bridge.sender.requests) == 3
    assert bridge.sender.messages == []
    assert (
        bridge.metric(
            "alertbridge_deliveries_finished_total",
            state="failed",
            reason=Reason.ATTEMPTS_EXHAUSTED,
        )
        == 1
    )
    # Each retry waited for its backoff: a due retry is never taken early.
    starts = [r.at for r in bridge.sender.requests]
    assert starts[1] - starts[0] >= 0.5 and starts[2] - starts[1] >= 1.0


async def test_a_refused_delivery_fails_at_once_and_frees_its_group(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path)
    bridge.sender.script(Failed(Reason.FORBIDDEN, "bot was blocked by the user"), chat=GROUP)
    [first] = await bridge.receive(notification("DiskFull"), [GROUP])
    [second] = await bridge.receive(notification("DiskFull", alerts=("a", "b")), [GROUP])

    await bridge.drain()
    rows = bridge.rows()
    assert (rows[first]["state"], rows[first]["reason"]) == ("failed", Reason.FORBIDDEN)
    assert rows[second]["state"] == "delivered"
    assert len(bridge.sender.requests) == 2


async def test_an_early_second_message_does_not_delay_a_retry(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    """A row can have two queue messages (the scheduler republished it while the first
    still waited in a long queue). The second, arriving before the retry is due, finds
    nothing to do; the retry still goes when due, not ``republish_after`` later."""
    bridge = line(clock, store, db_path)
    bridge.sender.script(Retry(Reason.SERVER_ERROR, "502 Bad Gateway"), chat=GROUP)
    [d] = await bridge.receive(notification("DiskFull"), [GROUP])
    await bridge.drain()
    await bridge.worker.handle(d, GROUP)  # the second message: not due, nothing sent
    assert len(bridge.sender.requests) == 1
    assert bridge.metric("alertbridge_claims_deferred_total") == 1

    await bridge.settle(step=0.5, within=5)  # the backoff is at most 1 s
    assert bridge.sender.copies(d) == 1
    first, retried = bridge.sender.requests
    assert retried.at - first.at <= 1.5


async def test_an_early_second_message_does_not_delay_a_parked_delivery(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, paced=limits())
    [first] = await bridge.receive(notification("DiskFull"), [PRIVATE])
    [parked] = await bridge.receive(notification("CpuHigh"), [PRIVATE])
    await bridge.drain()  # the first takes this second's slot; the other is parked for it
    assert bridge.rows()[parked]["state"] == "queued"
    await bridge.worker.handle(parked, PRIVATE)  # its second message: not due yet
    assert bridge.sender.copies(parked) == 0

    await bridge.settle(step=0.25, within=5)
    assert [m.delivery_id for m in bridge.sender.messages] == [first, parked]
    assert bridge.sender.messages[1].at - bridge.sender.messages[0].at <= 1.5


async def test_webhook_to_delivered_latency_is_read_on_the_worker_s_clock(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path)
    await bridge.receive(notification("DiskFull"), [GROUP])
    clock.advance(3)
    await bridge.drain()
    assert bridge.metric("alertbridge_webhook_to_delivered_seconds_count") == 1
    assert bridge.metric("alertbridge_webhook_to_delivered_seconds_sum") == 3


# -- ambiguity ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["assume_sent", "resend"])
async def test_a_lost_answer_follows_the_ambiguity_policy(
    clock: FakeClock, store: SqliteStore, db_path: Path, policy: str
) -> None:
    bridge = line(clock, store, db_path, on_ambiguous=policy)
    bridge.sender.script(Ambiguous(Reason.TIMEOUT, "no answer"), chat=GROUP)
    [d] = await bridge.receive(notification("DiskFull"), [GROUP])
    [behind] = await bridge.receive(notification("DiskFull", alerts=("a", "b")), [GROUP])

    await bridge.settle(step=1, within=60)

    rows = bridge.rows()
    assert rows[d]["was_ambiguous"] == 1
    assert bridge.metric("alertbridge_deliveries_ambiguous_total", policy=policy) == 1
    if policy == "assume_sent":
        assert (rows[d]["state"], rows[d]["reason"]) == ("ambiguous", Reason.TIMEOUT)
        assert bridge.sender.copies(d) == 1  # never sent again: at most once
    else:
        assert rows[d]["state"] == "delivered"
        assert bridge.sender.copies(d) == 2  # sent again: at least once
    # Either way the group's line moves on, in order.
    assert rows[behind]["state"] == "delivered"
    order = [m.delivery_id for m in bridge.sender.messages]
    assert order.index(behind) > max(i for i, x in enumerate(order) if x == d)


# -- a worker killed ---------------------------------------------------------------


async def test_killed_before_the_request_the_delivery_is_sent_later_once(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    """The worker dies after its claim, while it waits for the chat's slot: it wrote
    nothing, so when the lease runs out the row simply waits again (not ambiguous)."""
    bridge = line(clock, store, db_path, paced=limits(max_inline_wait="2s"))
    [first] = await bridge.receive(notification("DiskFull"), [PRIVATE])
    await bridge.drain()  # takes the chat's slot for this second
    [d] = await bridge.receive(notification("CpuHigh"), [PRIVATE])

    def die(seconds: float) -> None:
        raise Killed

    clock.on_sleep = die
    with pytest.raises(Killed):
        await bridge.drain()
    clock.on_sleep = None
    row = bridge.rows()[d]
    assert (row["state"], row["attempts"], row["send_started_at"]) == ("sending", 0, None)

    bridge.restart()
    # The broker redelivers to the new process at once: the lease still holds the row.
    await bridge.worker.handle(d, PRIVATE)
    assert bridge.metric("alertbridge_claims_missed_total") == 1
    assert bridge.sender.copies(d) == 0

    clock.advance(LEASE.total_seconds() + 1)
    await bridge.scheduler.tick()
    row = bridge.rows()[d]
    assert (row["state"], row["attempts"], row["was_ambiguous"]) == ("queued", 0, 0)
    assert bridge.metric("alertbridge_leases_expired_unsent_total") == 1
    assert bridge.metric("alertbridge_deliveries_ambiguous_total", policy="assume_sent") == 0
    assert d in bridge.publisher.pending[-1]

    await bridge.settle(step=1, within=10)
    row = bridge.rows()[d]
    assert (row["state"], row["attempts"], row["was_ambiguous"]) == ("delivered", 1, 0)
    assert bridge.sender.copies(d) == 1
    assert bridge.sender.copies(first) == 1


@pytest.mark.parametrize("died", [Die.WRITING, Die.AWAITING_ANSWER])
@pytest.mark.parametrize("policy", ["assume_sent", "resend"])
async def test_killed_after_the_request_was_marked_written_it_is_ambiguous(
    clock: FakeClock, store: SqliteStore, db_path: Path, policy: str, died: Die
) -> None:
    """Once ``begin_send`` stamped the row nobody can tell whether Telegram has the
    message: the policy decides, and the ambiguity is counted, never silent."""
    bridge = line(clock, store, db_path, on_ambiguous=policy)
    bridge.sender.script(died, chat=GROUP)
    [d] = await bridge.receive(notification("DiskFull"), [GROUP])
    [behind] = await bridge.receive(notification("DiskFull", alerts=("a", "b")), [GROUP])

    with pytest.raises(Killed):
        await bridge.drain()
    at_telegram = bridge.sender.copies(d)
    assert at_telegram == (1 if died is Die.AWAITING_ANSWER else 0)
    bridge.restart()
    await bridge.drain()  # the next of the group waits behind the unknown one
    assert bridge.sender.copies(behind) == 0

    clock.advance(LEASE.total_seconds() + 1)
    await bridge.scheduler.tick()
    row = bridge.rows()[d]
    assert (row["reason"], row["was_ambiguous"], row["attempts"]) == (
        Reason.LEASE_EXPIRED,
        1,
        1,
    )
    assert row["state"] == ("ambiguous" if policy == "assume_sent" else "retry")
    assert bridge.metric("alertbridge_deliveries_ambiguous_total", policy=policy) == 1
    assert bridge.metric("alertbridge_leases_expired_unsent_total") == 0

    await bridge.settle(step=1, within=30)
    rows = bridge.rows()
    if policy == "assume_sent":  # at most once
        assert rows[d]["state"] == "ambiguous"
        assert bridge.sender.copies(d) == at_telegram
    else:  # at least once
        assert (rows[d]["state"], rows[d]["was_ambiguous"]) == ("delivered", 1)
        assert bridge.sender.copies(d) == at_telegram + 1
    assert rows[behind]["state"] == "delivered"
    assert bridge.sender.copies(behind) == 1
    assert bridge.sender.messages[-1].delivery_id == behind  # still after it


# -- round trips ---------------------------------------------------------------------


class CountingStore(SqliteStore):
    """The real SQLite store, noting how each claim went and what else was applied."""

    claims: list[bool]
    applied: list[str]

    async def claim(self, delivery_id: int, **kwargs: Any) -> Delivery | None:
        self.claims.append(bool(kwargs.get("begin")))
        return await super().claim(delivery_id, **kwargs)

    async def apply(self, transition: Transition, delivery_id: int, **params: object) -> bool:
        self.applied.append(transition.name)
        return await super().apply(transition, delivery_id, **params)


@pytest.fixture
async def counting(db_path: Path, clock: FakeClock) -> AsyncIterator[CountingStore]:
    store = await CountingStore.open(db_path, clock=clock.time)
    await store.migrate()
    store.claims, store.applied = [], []
    yield store
    await store.close()


@pytest.mark.parametrize("paced", [None, limits()], ids=["limits off", "chat free"])
async def test_a_chat_with_nothing_to_wait_for_is_claimed_and_begun_in_one_round_trip(
    clock: FakeClock, counting: CountingStore, db_path: Path, paced: RateLimitConfig | None
) -> None:
    bridge = line(clock, counting, db_path, paced=paced)
    [d] = await bridge.receive(notification("DiskFull"), [GROUP])
    await bridge.drain()
    assert bridge.rows()[d]["state"] == "delivered"
    assert counting.claims == [True]
    assert T.begin_send.name not in counting.applied


async def test_a_chat_the_pacer_holds_is_claimed_then_begun_once_its_turn_comes(
    clock: FakeClock, counting: CountingStore, db_path: Path
) -> None:
    bridge = line(clock, counting, db_path, paced=limits())
    first, second = [await bridge.receive(notification(n), [GROUP]) for n in ("A", "B")]
    await bridge.settle(step=0.5, within=30)
    assert {bridge.rows()[d]["state"] for d in [*first, *second]} == {"delivered"}
    # The second found the chat busy (one message a second in a group): claimed
    # without beginning (handed back and claimed again, while the wait was long),
    # and begun on its own once its turn came.
    assert counting.claims[0] and not any(counting.claims[1:])
    assert len(counting.claims) >= 2
    assert counting.applied.count(T.begin_send.name) == 1


# -- 429s ------------------------------------------------------------------------------


async def test_a_429_blocks_its_chat_and_not_the_others(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, paced=limits())
    retry_after = 30.0
    bridge.sender.script(
        Retry(Reason.RATE_LIMITED, "Too Many Requests", timedelta(seconds=retry_after)),
        chat=GROUP,
    )
    first = await bridge.receive(notification("DiskFull"), [GROUP, OTHER_GROUP, THIRD_GROUP])
    await bridge.drain()
    clock.advance(2)
    second = await bridge.receive(notification("CpuHigh"), [GROUP, OTHER_GROUP])
    await bridge.drain()

    # The other chats went at once; the blocked one got nothing more.
    assert {m.delivery_id for m in bridge.sender.messages} == {*first[1:], second[1]}
    assert [r.delivery.id for r in bridge.sender.requests if r.delivery.chat_id == GROUP] == [
        first[0]
    ]
    row = bridge.rows()[second[0]]
    assert (row["state"], row["attempts"]) == ("queued", 0)  # handed back, not attempted
    assert bridge.metric("alertbridge_rate_limit_parked_total") >= 1

    await bridge.settle(step=1, within=60)
    blocked = [r for r in bridge.sender.requests if r.delivery.chat_id == GROUP]
    assert [r.at - clock.EPOCH >= retry_after for r in blocked] == [False, True, True]
    for d in (*first, *second):
        assert bridge.sender.copies(d) == 1
    rows = bridge.rows()
    assert (rows[first[0]]["attempts"], rows[second[0]]["attempts"]) == (2, 1)
    assert bridge.metric("alertbridge_telegram_rate_limited_total") == 1


async def test_a_429_longer_than_the_lease_keeps_order_and_sends_once(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    """retry_after 120 s against a 60 s lease: the group's next delivery does not
    overtake, a delivery caught waiting for the chat is handed back to the store
    instead of being held past its lease, and nothing is sent twice."""
    bridge = line(clock, store, db_path, paced=limits(max_inline_wait="2s"))
    retry_after = 2 * LEASE.total_seconds()
    [first] = await bridge.receive(notification("DiskFull"), [PRIVATE])
    [other] = await bridge.receive(notification("CpuHigh"), [PRIVATE])
    [same_group] = await bridge.receive(notification("DiskFull", alerts=("a", "b")), [PRIVATE])
    bridge.publisher.pending.clear()

    async def other_waits_for_its_slot_meanwhile() -> None:
        # Another delivery to the chat is claimed and waits for its slot, a
        # second after this one's, while this request is in flight.
        waiting.append(asyncio.create_task(bridge.worker.handle(other, PRIVATE)))
        slot_in.append(await clock.sleeper())

    waiting: list[asyncio.Task[None]] = []
    slot_in: list[float] = []
    bridge.sender.script(
        Step(
            Retry(Reason.RATE_LIMITED, "Too Many Requests", timedelta(seconds=retry_after)),
            during=other_waits_for_its_slot_meanwhile,
        ),
        chat=PRIVATE,
    )
    with clock.held():
        await bridge.worker.handle(first, PRIVATE)
        await bridge.worker.handle(same_group, PRIVATE)  # behind the 429: not claimed
        assert bridge.rows()[same_group]["state"] == "queued"
        assert 0 < slot_in[0] <= 2
        clock.advance(slot_in[0])  # its slot comes: the chat is blocked for two minutes
        sleeps_again = asyncio.ensure_future(clock.sleeper())
        done, _ = await asyncio.wait(
            {waiting[0], sleeps_again}, return_when=asyncio.FIRST_COMPLETED
        )
        sleeps_again.cancel()
        if waiting[0] not in done:
            waiting[0].cancel()
            pytest.fail("the worker keeps holding its claim for the blocked chat")
        waiting[0].result()

    row = bridge.rows()[other]
    assert (row["state"], row["attempts"], row["lease_until"]) == ("queued", 0, None)
    assert bridge.metric("alertbridge_rate_limit_parked_total") == 1
    assert len(bridge.sender.requests) == 1

    await bridge.settle(step=5, within=4 * retry_after)

    sent = [m.delivery_id for m in bridge.sender.messages]
    assert sorted(sent) == sorted([first, other, same_group])  # each exactly once
    assert sent.index(first) < sent.index(same_group)
    assert all(m.at - clock.EPOCH >= retry_after for m in bridge.sender.messages)
    rows = bridge.rows()
    assert [rows[d]["attempts"] for d in (first, other, same_group)] == [2, 1, 1]
    # No lease ran out: nothing was held past it, nothing became ambiguous.
    assert bridge.metric("alertbridge_leases_expired_unsent_total") == 0
    assert bridge.metric("alertbridge_deliveries_ambiguous_total", policy="assume_sent") == 0


# -- storms ------------------------------------------------------------------------------


async def test_a_chat_far_behind_gets_one_digest_after_the_storm_gathers(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, paced=limits(digest_after=5))
    storm = [(await bridge.receive(notification(f"Node{i}"), [GROUP]))[0] for i in range(8)]
    [elsewhere] = await bridge.receive(notification("Elsewhere"), [OTHER_GROUP])

    await bridge.drain()
    # The storm gathers: nothing goes to its chat yet; the other chat is not held up.
    assert [m.delivery_id for m in bridge.sender.messages] == [elsewhere]

    await bridge.settle(step=0.25, within=10)
    [digest] = bridge.sender.in_chat(GROUP)
    carrier = digest.delivery_id
    assert digest.text.startswith("🌪 <b>Storm digest: 8 alerts firing")
    assert digest.at - clock.EPOCH >= STORM_GATHER
    assert digest.reply_to is None  # nobody's thread
    rows = bridge.rows()
    folded = [d for d in storm if d != carrier]
    assert rows[carrier]["state"] == "delivered"
    for d in folded:
        assert (rows[d]["state"], rows[d]["reason"], rows[d]["digest_id"]) == (
            "suppressed",
            Reason.DIGEST,
            carrier,
        )
    assert bridge.metric("alertbridge_storm_digests_total") == 1
    assert (
        bridge.metric("alertbridge_deliveries_finished_total", state="suppressed", reason="digest")
        == 7
    )
    assert len(bridge.sender.requests) == 2


async def test_a_delivery_claimed_but_not_written_is_folded_and_never_sent(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, paced=limits(digest_after=5))
    storm = [(await bridge.receive(notification(f"Node{i}"), [GROUP]))[0] for i in range(8)]
    await bridge.drain()  # the storm gathers
    clock.advance(STORM_GATHER)
    # Another worker (the shard's previous owner, say) has claimed one of them and
    # is waiting for the chat's slot: no request written yet.
    claimed_elsewhere = storm[1]
    assert await store.claim(claimed_elsewhere, lease=LEASE) is not None

    await bridge.settle(step=0.25, within=10)
    [digest] = bridge.sender.in_chat(GROUP)
    assert digest.text.startswith("🌪 <b>Storm digest: 8 alerts firing")
    row = bridge.rows()[claimed_elsewhere]
    assert (row["state"], row["digest_id"], row["lease_until"]) == (
        "suppressed",
        digest.delivery_id,
        None,
    )
    # That worker's next step finds the row finished: it writes nothing.
    assert not await store.apply(T.begin_send, claimed_elsewhere)
    assert bridge.sender.copies(claimed_elsewhere) == 0


@pytest.mark.parametrize("resolution", ["folded", "carries_the_digest"])
async def test_a_resolution_swallowed_by_a_digest_closes_its_thread(
    clock: FakeClock, store: SqliteStore, db_path: Path, resolution: str
) -> None:
    """The thread rule under a digest: the resolution is never sent as a reply, so
    the group's next firing starts a new thread instead of answering a stale one."""
    bridge = line(clock, store, db_path, paced=limits(digest_after=3))
    disk = notification("DiskFull")
    await bridge.receive(disk, [GROUP])
    await bridge.drain()
    [anchor] = bridge.sender.in_chat(GROUP)
    clock.advance(10)

    resolved = notification("DiskFull", status=Status.RESOLVED)
    others = [notification(f"Node{i}") for i in range(4)]
    storm = [resolved, *others] if resolution == "carries_the_digest" else [*others, resolved]
    for n in storm:
        await bridge.receive(n, [GROUP])
    await bridge.settle(step=0.25, within=10)
    digest = bridge.sender.in_chat(GROUP)[-1]
    assert digest.text.startswith("🌪 <b>Storm digest: 4 alerts firing, 1 resolved")
    assert len(bridge.sender.in_chat(GROUP)) == 2  # the anchor, then one digest

    clock.advance(10)
    [again] = await bridge.receive(notification("DiskFull", incident=2), [GROUP])
    await bridge.drain()
    message = bridge.sender.in_chat(GROUP)[-1]
    assert message.delivery_id == again
    assert message.reply_to is None, f"replied to {anchor.message_id}, a closed thread"
    assert bridge.sender.edits == []  # no stale anchor edited either


async def test_a_firing_folded_into_a_digest_keeps_its_thread(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, paced=limits(digest_after=3))
    await bridge.receive(notification("DiskFull"), [GROUP])
    await bridge.drain()
    [anchor] = bridge.sender.in_chat(GROUP)
    clock.advance(10)
    for n in [notification(f"Node{i}") for i in range(3)]:
        await bridge.receive(n, [GROUP])
    await bridge.receive(notification("DiskFull", alerts=("a", "b")), [GROUP])
    await bridge.settle(step=0.25, within=10)
    assert len(bridge.sender.in_chat(GROUP)) == 2

    clock.advance(10)
    [resolved] = await bridge.receive(notification("DiskFull", status=Status.RESOLVED), [GROUP])
    await bridge.drain()
    message = bridge.sender.in_chat(GROUP)[-1]
    assert (message.delivery_id, message.reply_to) == (resolved, anchor.message_id)


async def test_a_producer_s_message_in_a_storm_goes_as_written_and_never_carries_a_digest(
    clock: FakeClock, store: SqliteStore, db_path: Path
) -> None:
    bridge = line(clock, store, db_path, paced=limits(digest_after=5))
    (own,) = await store.accept_messages(
        [
            NewMessage(
                key=message_key("billing", "inv-1"),
                producer="billing",
                message_id="inv-1",
                request_hash="h",
                request="{}",
                deliveries=[NewDelivery(GROUP, None, False, "", "Invoice <b>42</b> paid")],
            )
        ],
        republish_after=timedelta(seconds=30),
    )
    await bridge.publisher.publish([(d.id, d.chat_id) for d in own.message.deliveries])
    storm = [(await bridge.receive(notification(f"Node{i}"), [GROUP]))[0] for i in range(7)]

    await bridge.settle(step=0.25, within=10)
    sent = bridge.sender.in_chat(GROUP)
    assert sent[0].text == "Invoice <b>42</b> paid"  # first in, not held for the storm
    [digest] = sent[1:]
    assert digest.text.startswith("🌪 <b>Storm digest: 7 alerts firing")
    assert digest.delivery_id in storm
