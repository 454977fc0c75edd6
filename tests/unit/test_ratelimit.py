"""Telegram's limits as slots: a fake clock, exact arithmetic."""

from __future__ import annotations

import itertools

from bridge.config import RateLimitConfig
from bridge.ratelimit import JITTER_MARGIN, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **settings: float) -> RateLimiter:
    config = RateLimitConfig.model_validate(settings)
    return RateLimiter(lambda: config, clock)


def test_a_private_chat_gets_one_slot_a_second() -> None:
    clock = Clock()
    rl = limiter(clock)
    slots = [rl.plan(42) for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert slots[0] == clock.now
    assert all(abs(gap - JITTER_MARGIN) < 1e-9 for gap in gaps)


def test_a_group_gets_twenty_a_minute() -> None:
    clock = Clock()
    rl = limiter(clock)
    slots = [rl.plan(-100) for _ in range(45)]
    period = 60 * JITTER_MARGIN
    for i in range(len(slots)):
        in_window = [s for s in slots if slots[i] <= s < slots[i] + period]
        assert len(in_window) <= 20
    assert slots[20] >= slots[0] + period  # the 21st waits for the window


def test_chats_do_not_wait_for_each_other() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(100):
        rl.plan(-1)
    assert rl.plan(-2) == clock.now


def test_sends_are_held_to_the_limits_even_when_planned_slots_bunch_up() -> None:
    clock = Clock()
    rl = limiter(clock)
    assert rl.wait_to_send(7) == 0
    assert abs(rl.wait_to_send(7) - JITTER_MARGIN) < 1e-9
    clock.now += JITTER_MARGIN
    assert rl.wait_to_send(7) == 0


def test_the_bot_limit_holds_across_chats_and_shrinks_with_the_share() -> None:
    clock = Clock()
    rl = limiter(clock, per_bot_per_second=25)
    sent = sum(rl.wait_to_send(chat) == 0 for chat in range(40))
    assert sent == 25
    rl.set_share(0.5)  # two workers: half the bot's rate each
    clock.now += 10
    assert sum(rl.wait_to_send(chat) == 0 for chat in range(100, 140)) == 12


def test_a_429_blocks_the_chat_for_retry_after() -> None:
    clock = Clock()
    rl = limiter(clock)
    rl.penalize(5, 30)
    assert rl.wait_to_send(5) == 30
    assert rl.plan(5) == clock.now + 30
    assert rl.wait_to_send(6) == 0  # other chats go on


def test_idle_chats_are_forgotten() -> None:
    clock = Clock()
    rl = limiter(clock)
    rl.plan(-1)
    rl.wait_to_send(-1)
    clock.now += 3600
    rl.forget_idle()
    assert rl._plan == {} and rl._sent == {}
