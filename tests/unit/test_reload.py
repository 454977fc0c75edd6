"""A reload reaches the parts that read the config in force: the rate limiter
follows new limits at once, without forgetting the sends already counted."""

from __future__ import annotations

import pytest

from bridge.config import LiveConfig, RateLimitConfig
from bridge.config_file import parse_config
from bridge.ratelimit import JITTER_MARGIN, RateLimiter

CONFIG = """
telegram: {token: "123:ABC"}
route: {chats: [-1001]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_config_in_force_is_what_every_reader_gets() -> None:
    live = LiveConfig(parse_config(CONFIG, environ={}))
    readers = [lambda: live().rate_limits.per_chat_per_second for _ in range(2)]
    live.replace(parse_config(CONFIG + "rate_limits: {per_chat_per_second: 0.25}", environ={}))
    assert [read() for read in readers] == [0.25, 0.25]


def test_the_rate_limiter_follows_reloaded_limits_and_keeps_what_it_counted() -> None:
    limits = RateLimitConfig()
    clock = Clock()
    limiter = RateLimiter(lambda: limits, clock)
    first = limiter.plan(42)
    assert limiter.plan(42) - first == pytest.approx(JITTER_MARGIN)  # one a second
    assert limiter.wait_to_send(42) == 0

    limits = RateLimitConfig(per_chat_per_second=0.25)  # reloaded: one every four seconds
    assert limiter.plan(42) - first == pytest.approx(JITTER_MARGIN * 5)
    clock.now += 2
    # The send counted before the reload still counts, under the new limit.
    assert limiter.wait_to_send(42) == pytest.approx(JITTER_MARGIN * 4 - 2)


def test_a_raised_bot_limit_applies_at_once() -> None:
    limits = RateLimitConfig(per_bot_per_second=5)
    clock = Clock()
    limiter = RateLimiter(lambda: limits, clock)
    assert sum(limiter.wait_to_send(chat) == 0 for chat in range(10)) == 5
    limits = RateLimitConfig(per_bot_per_second=8)
    assert sum(limiter.wait_to_send(chat) == 0 for chat in range(10, 20)) == 3
