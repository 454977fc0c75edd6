"""Fakes at the bridge's edges, for unit tests that run in milliseconds.

Time, Telegram, the queue, Alertmanager's API and the Bot API are replaced; the
store is the real SQLite one (on the fake clock), and the worker, pacer,
scheduler, rebalancer and bot handler are the production classes, untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import sqlite3
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Chat, Message

from bridge.alertmanager_api import Silence
from bridge.config import Config, DeliveryConfig, RateLimitConfig, RouteConfig, TelegramConfig
from bridge.dedup import group_ref, notification_key
from bridge.delivery import UNFINISHED, Delivery
from bridge.metrics import Metrics
from bridge.models import Alert, Notification, Status
from bridge.outbox import Answer
from bridge.pacer import Pacer
from bridge.queue.base import DeadLetter
from bridge.ratelimit import RateLimiter
from bridge.scheduler import Scheduler
from bridge.store import NewDelivery, Store
from bridge.store.sqlite import SqliteStore
from bridge.telegram import Ambiguous, Outcome, Sent
from bridge.worker import Worker

# -- time ------------------------------------------------------------------------


class FakeClock:
    """One clock for the store's wall time and the worker's monotonic time.

    Time moves only when a test calls ``advance`` or the code sleeps:
    ``sleep(s)`` moves it by ``s`` and yields once. Inside ``held()`` a sleep
    waits instead for the test to ``advance`` past it, so a test can catch a
    worker in the middle of a wait and act meanwhile.
    """

    #: A fixed Unix time to start from: a test never depends on the real date.
    EPOCH = 1_790_000_000.0
    #: The monotonic clock's zero is arbitrary; make it differ from the wall clock's.
    MONOTONIC_ZERO = 5_000.0

    def __init__(self) -> None:
        self.elapsed = 0.0
        #: Called with the seconds at each sleep, before it waits: may raise to
        #: simulate the process dying there.
        self.on_sleep: Callable[[float], None] | None = None
        self._held = False
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []
        self._someone_waits = asyncio.Event()

    def monotonic(self) -> float:
        return self.MONOTONIC_ZERO + self.elapsed

    def time(self) -> float:
        return self.EPOCH + self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds
        for entry in list(self._waiting):
            until, waiter = entry
            if until <= self.elapsed + 1e-9:  # float sums: a sleep ends at its deadline
                self._waiting.remove(entry)
                if not waiter.done():
                    waiter.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        if not self._held:
            self.elapsed += max(seconds, 0.0)
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((self.elapsed + max(seconds, 0.0), waiter))
        self._someone_waits.set()
        await waiter

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Sleeps wait for ``advance`` while inside."""
        self._held = True
        try:
            yield
        finally:
            self._held = False

    async def sleeper(self) -> float:
        """Wait (on an event, not on time) until some task sleeps in ``held()`` mode;
        how much longer its sleep lasts."""
        await self._someone_waits.wait()
        self._someone_waits.clear()
        return min(until for until, _ in self._waiting) - self.elapsed


# -- Telegram, as the worker sees it ----------------------------------------------


class Killed(BaseException):
    """The worker's process died here (SIGKILL, OOM): nothing in the worker catches it."""


class Die(enum.Enum):
    """Where, once ``begin_send`` has marked the request written, the process dies."""

    WRITING = "writing"  # the request never reached Telegram: it has nothing
    AWAITING_ANSWER = "awaiting_answer"  # Telegram has the message; nobody read the answer


@dataclass(frozen=True)
class Step:
    """One scripted send: its outcome (None: sent, with the next message id), whether
    the process dies around it, and what happens while the request is in flight."""

    outcome: Outcome | None = None
    die: Die | None = None
    during: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class TelegramMessage:
    """A message Telegram holds."""

    at: float  # the fake wall clock when it arrived
    chat_id: int
    message_id: int
    delivery_id: int
    text: str
    reply_to: int | None


@dataclass(frozen=True)
class Request:
    """A sendMessage the worker wrote, and what became of it."""

    at: float
    delivery: Delivery
    outcome: Outcome | Die


class FakeSender:
    """Telegram for the worker: scripted outcomes per chat (or for any chat), else Sent.

    ``messages`` is what Telegram holds, ``requests`` what the worker asked for.
    Like the real sender, a message goes as a reply to its group's thread anchor.
    """

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._by_chat: dict[int, deque[Step]] = {}
        self._any: deque[Step] = deque()
        self._message_ids = itertools.count(1000)
        self.requests: list[Request] = []
        self.messages: list[TelegramMessage] = []
        self.edits: list[tuple[int, int]] = []  # (delivery id, anchor message id)

    def script(self, *steps: Step | Outcome | Die, chat: int | None = None) -> None:
        line = self._any if chat is None else self._by_chat.setdefault(chat, deque())
        for step in steps:
            if isinstance(step, Die):
                step = Step(die=step)
            elif not isinstance(step, Step):
                step = Step(outcome=step)
            line.append(step)

    def _next_step(self, chat_id: int) -> Step:
        for line in (self._by_chat.get(chat_id), self._any):
            if line:
                return line.popleft()
        return Step()

    async def send(self, delivery: Delivery) -> Outcome:
        step = self._next_step(delivery.chat_id)
        if step.die is Die.WRITING:
            self.requests.append(Request(self._clock.time(), delivery, Die.WRITING))
            raise Killed
        if step.during is not None:
            await step.during()
        outcome = step.outcome
        if outcome is None or isinstance(outcome, Ambiguous) or step.die is Die.AWAITING_ANSWER:
            # The request reached Telegram: it holds the message, whatever the worker hears.
            message_id = next(self._message_ids)
            self.messages.append(
                TelegramMessage(
                    self._clock.time(),
                    delivery.chat_id,
                    message_id,
                    delivery.id,
                    delivery.text,
                    delivery.anchor_message_id,
                )
            )
            if outcome is None:
                outcome = Sent(message_id, reply_to=delivery.anchor_message_id)
        if step.die is Die.AWAITING_ANSWER:
            self.requests.append(Request(self._clock.time(), delivery, Die.AWAITING_ANSWER))
            raise Killed
        self.requests.append(Request(self._clock.time(), delivery, outcome))
        return outcome

    async def edit_anchor(self, delivery: Delivery, message_id: int) -> bool:
        self.edits.append((delivery.id, message_id))
        return True

    def copies(self, delivery_id: int) -> int:
        """How many messages Telegram holds for one delivery."""
        return sum(1 for m in self.messages if m.delivery_id == delivery_id)

    def in_chat(self, chat_id: int) -> list[TelegramMessage]:
        return [m for m in self.messages if m.chat_id == chat_id]


# -- the queue ------------------------------------------------------------------------


class FakePublisher:
    """The queue: records every publish; ``pending`` is what a consumer has yet to take."""

    def __init__(self, *, at_most: int | None = None) -> None:
        self.published: list[int] = []
        self.pending: deque[tuple[int, int]] = deque()
        # A pass that would publish more than this fails instead of running on.
        self._at_most = at_most

    @property
    def connected(self) -> bool:
        return True

    async def publish(self, deliveries: list[tuple[int, int]]) -> None:
        self.published.extend(d for d, _ in deliveries)
        if self._at_most is not None and len(self.published) > self._at_most:
            raise AssertionError(f"published {len(self.published)}, expected {self._at_most}")
        self.pending.extend(deliveries)

    async def take_dead_letters(self, limit: int) -> list[DeadLetter]:
        """Nothing is dead-lettered in memory: a wake-up here is never refused."""
        return []


class FakeShardQueue:
    """What the rebalancer asks of the broker: step back from shards it does not own."""

    def __init__(self) -> None:
        self.stepped_back: list[set[int]] = []

    async def step_back(self, shards: Iterable[int]) -> None:
        self.stepped_back.append(set(shards))


# -- Alertmanager's API and the Bot API, as the bot sees them -----------------------


@dataclass
class CreatedSilence:
    labels: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


class FakeAlertmanager:
    """``AlertmanagerClient``'s four calls, in memory."""

    ui_url = "http://alertmanager.test:9093"

    def __init__(
        self, firing: list[dict[str, Any]] | None = None, silence_labels: list[str] | None = None
    ) -> None:
        self.firing = firing or []
        #: ``alertmanager.silence_labels``: what a silence from Telegram matches on.
        self.identifying_labels = silence_labels or []
        self.created: dict[str, CreatedSilence] = {}
        self.expired: list[str] = []

    async def firing_alerts(self) -> list[dict[str, Any]]:
        return list(self.firing)

    async def silences(self) -> list[Silence]:
        return [
            Silence(sid, "active", [], s.ends_at.isoformat(), s.created_by, s.comment)
            for sid, s in self.created.items()
            if sid not in self.expired
        ]

    async def create_silence(
        self,
        labels: Mapping[str, str],
        *,
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> tuple[str, str]:
        silence_id = f"silence-{len(self.created) + 1}"
        self.created[silence_id] = CreatedSilence(
            dict(labels), starts_at, ends_at, created_by, comment
        )
        return silence_id, self.ui_url

    async def expire_silence(self, silence_id: str) -> None:
        self.expired.append(silence_id)


class FakeBotSession(BaseSession):
    """The Bot API under a real aiogram ``Bot``: records each call and answers it as
    Telegram would (a Message for sendMessage and editMessageText, else True)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[TelegramMethod[Any]] = []
        self._message_ids = itertools.count(5000)

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        self.calls.append(method)
        name = type(method).__name__
        if name in ("SendMessage", "EditMessageText"):
            chat_id = int(getattr(method, "chat_id", 0))
            message_id = getattr(method, "message_id", None) or next(self._message_ids)
            message = Message(
                message_id=message_id,
                date=datetime(2026, 1, 1, tzinfo=UTC),
                chat=Chat(id=chat_id, type="supergroup" if chat_id < 0 else "private"),
                text=getattr(method, "text", ""),
            )
            return message.as_(bot)  # type: ignore[return-value]
        return True  # type: ignore[return-value]

    async def close(self) -> None:
        return None

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("the bot downloads no files")
        yield b""  # an async generator, as the base class declares

    def sent(self, chat_id: int | None = None) -> list[SendMessage]:
        return [
            c
            for c in self.calls
            if isinstance(c, SendMessage) and (chat_id is None or c.chat_id == chat_id)
        ]

    def of(self, name: str) -> list[Any]:
        return [c for c in self.calls if type(c).__name__ == name]


# -- notifications into the store ----------------------------------------------------

WINDOW = timedelta(minutes=5)
REPUBLISH_AFTER = timedelta(seconds=30)


def notification(
    group: str,
    *,
    status: Status = Status.FIRING,
    alerts: Iterable[str] = ("a",),
    incident: int = 1,
    labels: Mapping[str, str] | None = None,
) -> Notification:
    """A notification of alert group ``group``; another ``incident`` is new content."""
    names = list(alerts)
    common = {"alertname": group, **(labels or {})}
    return Notification(
        source="alertmanager",
        receiver="telegram",
        group_key=f'{{}}:{{alertname="{group}"}}',
        status=status,
        alerts=tuple(
            Alert(
                fingerprint=f"{group}-{name}",
                status=status,
                labels={**common, "instance": name},
                annotations={},
                starts_at=datetime(2026, 1, incident, tzinfo=UTC),
                ends_at=None,
            )
            for name in names
        ),
        common_labels=common,
    )


async def accept(
    store: Store,
    n: Notification,
    chats: Iterable[int],
    *,
    thread_id: int | None = None,
    window: timedelta = WINDOW,
) -> list[tuple[int, int]]:
    """What the receiver stores for ``n`` (its real key and group): the (id, chat)
    of each delivery to publish."""
    accepted = await store.accept(
        notification_key(n),
        group_ref(n),
        n,
        [
            NewDelivery(c, thread_id, False, "default", f"{n.status} {n.group_key} → {c}")
            for c in chats
        ],
        dedup_window=window,
        republish_after=REPUBLISH_AFTER,
    )
    return accepted.deliveries


# -- looking at the rows ---------------------------------------------------------------


def rows(path: Path) -> dict[int, sqlite3.Row]:
    """Every delivery row, read beside the store (WAL lets a reader in)."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return {r["id"]: r for r in db.execute("SELECT * FROM deliveries ORDER BY id")}
    finally:
        db.close()


def open_thread(path: Path, n: Notification, chat_id: int) -> int | None:
    """The anchor message of ``n``'s group thread in ``chat_id``, if it is open."""
    db = sqlite3.connect(path)
    try:
        found = db.execute(
            """SELECT message_id FROM group_threads
               WHERE group_ref = ? AND chat_id = ? AND closed_at IS NULL""",
            (str(group_ref(n)), chat_id),
        ).fetchone()
    finally:
        db.close()
    return None if found is None else int(found[0])


# -- one worker process on the fake edges -------------------------------------------


def config(delivery: DeliveryConfig | None = None, limits: RateLimitConfig | None = None) -> Config:
    """A whole config around the settings a test is about; ``limits`` None: rate limits off."""
    return Config(
        telegram=TelegramConfig(token="123:ABC"),
        route=RouteConfig(chats=[1]),
        delivery=delivery or DeliveryConfig(),
        rate_limits=limits or RateLimitConfig(enabled=False),
    )


@dataclass
class Line:
    """The delivery line as ``bridge.service`` wires it (worker, pacer, scheduler) over
    the real SQLite store, with the queue, Telegram and time faked."""

    clock: FakeClock
    store: SqliteStore
    path: Path
    settings: DeliveryConfig = field(default_factory=DeliveryConfig)
    #: None: rate limits off (no pacer), as with ``rate_limits.enabled: false``.
    limits: RateLimitConfig | None = None
    sender: FakeSender = field(init=False)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    metrics: Metrics = field(default_factory=Metrics)
    pacer: Pacer | None = field(init=False)
    worker: Worker = field(init=False)
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.sender = FakeSender(self.clock)
        self.config = config(self.settings, self.limits)
        self.scheduler = Scheduler(
            self.store, self.publisher, lambda: self.config, self.metrics, self.clock
        )
        self.restart()

    def restart(self) -> None:
        """A new worker process: the pacer's calendars and storms start empty."""
        current = lambda: self.config  # noqa: E731 - the config in force, as a reload keeps it
        limiter = RateLimiter(lambda: self.config.rate_limits, self.clock.monotonic)
        self.pacer = Pacer(limiter, self.clock, current)
        self.worker = Worker(
            self.store, self.sender, current, self.metrics, self.clock, pacer=self.pacer
        )

    async def receive(self, n: Notification, chats: Iterable[int], **kwargs: Any) -> list[int]:
        """Store and publish, as the receiver does; the new delivery ids."""
        deliveries = await accept(self.store, n, chats, **kwargs)
        await self.publisher.publish(deliveries)
        return [d for d, _ in deliveries]

    async def drain(self) -> None:
        """The consumer: handle every published message, one at a time."""
        while self.publisher.pending:
            await self.worker.handle(*self.publisher.pending.popleft())

    async def settle(self, *, step: float, within: float) -> None:
        """Scheduler ticks and the consumer, ``step`` seconds apart, until no delivery is
        unfinished; fails if that takes longer than ``within`` seconds of fake time."""
        deadline = self.clock.elapsed + within
        while True:
            await self.scheduler.tick()
            await self.drain()
            counts = await self.store.state_counts()
            if not any(counts.get(s, 0) for s in UNFINISHED):
                return
            assert self.clock.elapsed < deadline, f"still unfinished: {counts}"
            self.clock.advance(step)

    def rows(self) -> dict[int, sqlite3.Row]:
        return rows(self.path)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


# -- producers' receipt endpoints ----------------------------------------------------


@dataclass(frozen=True)
class Posted:
    url: str
    body: bytes
    headers: dict[str, str]


class FakePoster:
    """A producer's callback endpoint, as the receipt sender sees it: every POST is
    recorded; answers are scripted (``script``), then ``default``. Inside ``gate``
    a POST waits for the test to open it, so two senders can be caught mid-POST."""

    def __init__(self, default: Answer | None = None) -> None:
        self.posts: list[Posted] = []
        self.default = default if default is not None else Answer(200)
        self._script: deque[Answer] = deque()
        self.gate: asyncio.Event | None = None

    def script(self, *answers: Answer) -> None:
        self._script.extend(answers)

    async def post(
        self, url: str, payload: bytes, headers: Mapping[str, str], *, within: float
    ) -> Answer:
        self.posts.append(Posted(url, payload, dict(headers)))
        if self.gate is not None:
            await self.gate.wait()
        return self._script.popleft() if self._script else self.default
