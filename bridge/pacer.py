"""Pacing, in one place: when may a claimed delivery be sent, and what if not soon.

``ratelimit.py`` is the calendar (pure arithmetic on Telegram's limits); this
is how the worker uses it. A slot is booked only once a claim succeeded, and
given back when the delivery will not use it. A claimed row is never held
longer than ``hold_at_most`` (a part of its lease): a longer wait, a long
``retry_after`` included, hands the row back to the store to wait for its
slot, with no attempt counted and its slot kept for when it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.clock import Clock
from bridge.config import Config
from bridge.ratelimit import RateLimiter

#: How long a delivery handed back for its slot waits in the store at most
#: before it is looked at again (seconds): a digest may free the chat's
#: calendar meanwhile, and then the row plans afresh.
PARK_AT_MOST = 5.0
#: A storm is gathered this long (seconds) from its first sight before its
#: digest goes: alerts of one incident arrive over a second or two.
STORM_GATHER = 2.0
#: Idle chats' calendars are dropped this often (seconds): bounded memory.
FORGET_EVERY = 60.0
#: Slots of deliveries handed back, kept this long for their return (seconds).
KEEP_PARKED = 300.0


@dataclass(frozen=True, slots=True)
class Go:
    """Send now: the wait is over and the send is recorded in the limiter."""

    waited: float


@dataclass(frozen=True, slots=True)
class Later:
    """Hand the row back; it comes back after ``delay`` seconds."""

    delay: float


class Pacer:
    def __init__(self, limiter: RateLimiter, clock: Clock, current: Callable[[], Config]) -> None:
        """``current``: the config in force, asked at each use (a reload changes it)."""
        self._limiter = limiter
        self._clock = clock
        self._current = current
        # Slots of deliveries handed back (delivery id → chat, slot): a
        # delivery keeps its place in its chat's calendar when it comes back.
        self._parked: dict[int, tuple[int, float]] = {}
        self._forgotten_at = clock.monotonic()
        # When each chat's storm was first seen: its digest waits for the rest.
        self._storms: dict[int, float] = {}

    @property
    def _max_inline_wait(self) -> float:
        return self._current().rate_limits.max_inline_wait.total_seconds()

    @property
    def _hold_at_most(self) -> float:
        # Half the lease: the other half covers the request and recording its answer.
        return self._current().delivery.lease.total_seconds() / 2

    @property
    def digest_after(self) -> int:
        """Waiting deliveries for one chat that make a storm digest; 0: never."""
        return self._current().rate_limits.digest_after

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    def book(self, delivery_id: int, chat_id: int) -> float:
        """The claimed delivery's slot: the one it was parked with, or the chat's next."""
        self._forget_idle()
        parked = self._parked.pop(delivery_id, None)
        if parked is not None:
            return parked[1]
        return self._limiter.plan(chat_id)

    def free_now(self, delivery_id: int, chat_id: int) -> bool:
        """Could a delivery for ``chat_id`` be sent this instant, no wait and no storm?
        Then the worker claims it and begins its request in one round trip."""
        now = self._clock.monotonic()
        return (
            delivery_id not in self._parked
            and chat_id not in self._storms
            and self._limiter.next_slot(chat_id) <= now
            and self._limiter.ready_in(chat_id) == 0
        )

    def release(self, chat_id: int, slot: float) -> None:
        """The delivery will not use its slot (its claim was lost)."""
        self._limiter.unplan(chat_id, slot)

    def storm(self, chat_id: int, backlog: int) -> float | None:
        """A delivery's slot has come with ``backlog`` others waiting for its chat: None
        to send it alone; 0 to send it as a storm digest now; else how many seconds to
        let the storm gather first, so it goes as one digest, not a digest per burst."""
        if not self.digest_after or backlog < self.digest_after:
            self._storms.pop(chat_id, None)
            return None
        now = self._clock.monotonic()
        began = self._storms.setdefault(chat_id, now)
        return max(began + STORM_GATHER - now, 0.0)

    def digested(self, chat_id: int) -> None:
        """The chat's backlog went into a digest: its booked slots are free again."""
        self._limiter.clear_plan(chat_id)
        self._parked = {d: p for d, p in self._parked.items() if p[0] != chat_id}
        self._storms.pop(chat_id, None)

    async def wait(self, delivery_id: int, chat_id: int, slot: float) -> Go | Later:
        """Wait for ``slot`` and until the limits on what was really sent admit one more,
        inline while that is short; otherwise say how long the row should wait in the store.
        Records nothing: ``take`` does, right before the request is written."""
        start = self._clock.monotonic()
        until_slot = slot - start
        if until_slot > self._max_inline_wait:
            return self.hold(delivery_id, chat_id, slot, until_slot)
        if until_slot > 0:
            await self._clock.sleep(until_slot)
        while (wait := self._limiter.ready_in(chat_id)) > 0:
            held = self._clock.monotonic() - start
            if held + wait > self._hold_at_most:
                return self.hold(delivery_id, chat_id, slot, wait)
            await self._clock.sleep(wait)
        return Go(self._clock.monotonic() - start)

    async def take(self, chat_id: int) -> None:
        """Record the send that is about to be written. Telegram counts a message when
        it arrives, so this is done last, after the store's round trip; only a send
        that slipped in meanwhile (to another chat, against the per-bot limit) waits."""
        while (wait := self._limiter.wait_to_send(chat_id)) > 0:
            await self._clock.sleep(wait)

    def penalize(self, chat_id: int, retry_after: float) -> None:
        """Telegram said 429: nothing goes to this chat before ``retry_after``."""
        self._limiter.penalize(chat_id, retry_after)

    def hold(self, delivery_id: int, chat_id: int, slot: float, wait: float) -> Later:
        """The delivery waits in the store and keeps ``slot`` for its return."""
        self._parked[delivery_id] = (chat_id, slot)
        return Later(min(wait, PARK_AT_MOST))

    def _forget_idle(self) -> None:
        now = self._clock.monotonic()
        if now - self._forgotten_at < FORGET_EVERY:
            return
        self._forgotten_at = now
        self._limiter.forget_idle()
        self._parked = {d: p for d, p in self._parked.items() if p[1] > now - KEEP_PARKED}
        self._storms = {c: t for c, t in self._storms.items() if t > now - KEEP_PARKED}

    def tracked_chats(self) -> int:
        """Chats with state in memory (for tests of bounded memory)."""
        return self._limiter.tracked_chats() + len({p[0] for p in self._parked.values()})
