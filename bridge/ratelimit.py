"""Telegram's speed limits as a calendar of send slots: wait for a slot, never for a 429.

Telegram allows about one message a second per chat, twenty a minute per
group chat and thirty a second per bot, and answers excess with 429s that
slow the whole bot down. Each chat gets a calendar: a delivery reserves the
earliest slot that keeps every window within its limit, and keeps it until
it is sent. A delivery whose slot is far off is parked in the store until
then (the worker does not hold a queue slot for it), so one busy chat never
stalls the others.

Pure: the clock is passed in. One worker owns a chat at a time (its shard's
single active consumer), so per-chat calendars are local; the per-bot limit
is split between workers by the share of shards each one owns.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.config import RateLimitConfig

#: Slots are spaced this much wider than the limit: the slot is kept when the
#: request is sent, Telegram counts when it arrives, and those can differ.
JITTER_MARGIN = 1.05


@dataclass
class Window:
    """At most ``limit`` slots in any ``period`` seconds."""

    limit: int
    period: float
    slots: deque[float]

    def earliest(self, at: float) -> float:
        """The earliest moment >= ``at`` a new slot fits, assuming slots are appended in order.

        Asking about a moment ahead changes nothing: the slots before it still count
        for any question about now (a peek must not empty the calendar)."""
        recent = len(self.slots) - bisect.bisect_right(self.slots, at - self.period)
        if recent < self.limit:
            return at
        return max(at, self.slots[-self.limit] + self.period)

    def add(self, slot: float) -> None:
        bisect.insort(self.slots, slot)

    def remove(self, slot: float) -> None:
        index = bisect.bisect_left(self.slots, slot)
        if index < len(self.slots) and self.slots[index] == slot:
            del self.slots[index]

    def forget(self, now: float) -> None:
        """Drop the slots that no longer count at ``now``: bounded memory."""
        while self.slots and self.slots[0] <= now - self.period:
            self.slots.popleft()


class RateLimiter:
    """Two views of the same limits.

    The *plan* is a calendar: each delivery reserves its chat's next free
    slot, possibly far ahead, and is parked until then. The *sent* windows
    hold when messages actually left; they are what is enforced right before
    a send, because a parked delivery comes back a little after its slot and
    the plan alone could then let two sends bunch up.
    """

    def __init__(self, settings: Callable[[], RateLimitConfig], clock: Callable[[], float]) -> None:
        """``settings``: the limits in force, asked on every use (a reload changes them)."""
        self._current = settings
        self._settings = settings()
        self._clock = clock
        self._share = 1.0
        self._plan: dict[int, list[Window]] = {}
        self._sent: dict[int, list[Window]] = {}
        self._bot = self._bot_window()
        self._blocked_until: dict[int, float] = defaultdict(float)

    def _bot_window(self, slots: deque[float] | None = None) -> Window:
        per_second = max(self._settings.per_bot_per_second * self._share, 1.0)
        return Window(int(per_second), JITTER_MARGIN, deque() if slots is None else slots)

    def _follow_settings(self) -> None:
        """New limits apply from now on; the slots already taken still count."""
        settings = self._current()
        if settings == self._settings:
            return
        self._settings = settings
        self._bot = self._bot_window(self._bot.slots)
        for table in (self._plan, self._sent):
            for chat_id, windows in table.items():
                renewed = self._chat_windows(chat_id)
                for new, old in zip(renewed, windows, strict=True):
                    new.slots = old.slots
                table[chat_id] = renewed

    def set_share(self, share: float) -> None:
        """This worker's part of the per-bot limit (the share of shards it owns)."""
        self._follow_settings()
        share = max(min(share, 1.0), 0.0)
        if share != self._share:
            self._share = share
            self._bot = self._bot_window()

    def _chat_windows(self, chat_id: int) -> list[Window]:
        s = self._settings
        windows = [Window(1, JITTER_MARGIN / s.per_chat_per_second, deque())]
        if chat_id < 0:  # groups, supergroups and channels have negative ids
            windows.append(Window(s.per_group_per_minute, 60.0 * JITTER_MARGIN, deque()))
        return windows

    def plan(self, chat_id: int) -> float:
        """Reserve the chat's next free slot in the calendar; returns it (on the clock)."""
        slot = self.next_slot(chat_id)
        for window in self._plan[chat_id]:
            window.add(slot)
        return slot

    def next_slot(self, chat_id: int) -> float:
        """The slot ``plan`` would reserve now, without reserving it."""
        self._follow_settings()
        windows = self._plan.get(chat_id)
        if windows is None:
            windows = self._plan[chat_id] = self._chat_windows(chat_id)
        now = self._clock()
        for window in windows:
            window.forget(now)
        slot = max(now, self._blocked_until[chat_id])
        while True:  # one window's constraint can push the slot past another's
            later = max(w.earliest(slot) for w in windows)
            if later == slot:
                return slot
            slot = later

    def unplan(self, chat_id: int, slot: float) -> None:
        """Give back a slot ``plan`` reserved: the delivery will not use it."""
        for window in self._plan.get(chat_id, ()):
            window.remove(slot)

    def planned_ahead(self, chat_id: int) -> float:
        """How far ahead the chat's calendar is booked, in seconds: its backlog."""
        windows = self._plan.get(chat_id)
        if not windows or not windows[0].slots:
            return 0.0
        return max(windows[0].slots[-1] - self._clock(), 0.0)

    def clear_plan(self, chat_id: int) -> None:
        """The chat's backlog went into a digest: its booked slots are free again."""
        self._plan.pop(chat_id, None)

    def ready_in(self, chat_id: int) -> float:
        """Seconds until a send to ``chat_id`` fits what was really sent; records nothing."""
        now = self._clock()
        return max(self._ready_at(chat_id, now) - now, 0.0)

    def wait_to_send(self, chat_id: int) -> float:
        """Seconds to wait before sending to ``chat_id`` now; 0 records the send."""
        self._follow_settings()
        now = self._clock()
        ready = self._ready_at(chat_id, now)
        if ready > now:
            return ready - now
        for window in (*self._sent_windows(chat_id), self._bot):
            window.add(now)
        return 0.0

    def _sent_windows(self, chat_id: int) -> list[Window]:
        windows = self._sent.get(chat_id)
        if windows is None:
            windows = self._sent[chat_id] = self._chat_windows(chat_id)
        return windows

    def _ready_at(self, chat_id: int, now: float) -> float:
        for window in (*self._sent_windows(chat_id), self._bot):
            window.forget(now)
        return max(
            self._blocked_until[chat_id],
            self._bot.earliest(now),
            *(w.earliest(now) for w in self._sent_windows(chat_id)),
        )

    def penalize(self, chat_id: int, retry_after: float) -> None:
        """Telegram said 429: nothing goes to this chat before ``retry_after`` seconds."""
        self._blocked_until[chat_id] = max(
            self._blocked_until[chat_id], self._clock() + retry_after
        )

    def forget_idle(self) -> None:
        """Drop the windows of chats with nothing recent (bounded memory after a storm)."""
        now = self._clock()
        for table in (self._plan, self._sent):
            idle = [
                chat_id
                for chat_id, windows in table.items()
                if all(not w.slots or w.slots[-1] <= now - w.period for w in windows)
            ]
            for chat_id in idle:
                del table[chat_id]
        for chat_id in [c for c, until in self._blocked_until.items() if until <= now]:
            del self._blocked_until[chat_id]

    def tracked_chats(self) -> int:
        """How many chats have state in memory."""
        return len(self._plan.keys() | self._sent.keys() | self._blocked_until.keys())
