"""Producers' receipts, sent: the SQLite store on a fake clock, a fake endpoint passed in,
the production sender (bridge/outbox.py). Signature, body, backoff, giving up, and
one POST per event however many senders run."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bridge.config import (
    Config,
    ProducerConfig,
    RateLimitConfig,
    ReceiptsConfig,
    RouteConfig,
    TelegramConfig,
)
from bridge.config_file import parse_config
from bridge.delivery import Reason, T, thread_change
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.outbox import Answer, ReceiptSender
from bridge.producer_api import prepare
from bridge.producers import message_key, producer_line
from bridge.receipts import GiveUp, Receipt, Retry, RetryPolicy, after_failure, body
from bridge.receiver import ReceiverDeps, Rules
from bridge.store import NewDelivery
from bridge.store.base import NewMessage
from bridge.store.sqlite import SqliteStore
from tests.unit.fakes import FakeClock, FakePoster, FakePublisher

SECRET = "s3cret-hmac-key"
URL = "http://billing.test/receipts"
LEASE = timedelta(seconds=60)
SETTINGS = ReceiptsConfig(
    backoff_initial=timedelta(seconds=5),
    backoff_max=timedelta(seconds=40),
    give_up_after=timedelta(hours=24),
)


def config(*, callback: bool = True, producer: bool = True) -> Config:
    billing = ProducerConfig(
        token="billing-token",
        chats=[42, 43],
        callback_url=URL if callback else None,
        callback_secret=SECRET if callback else None,
    )
    return Config(
        telegram=TelegramConfig(token="123:ABC"),
        route=RouteConfig(chats=[1]),
        rate_limits=RateLimitConfig(enabled=False),
        producers={"billing": billing} if producer else {},
        receipts=SETTINGS,
    )


class Running:
    """The config in force, as a reload swaps it."""

    def __init__(self) -> None:
        self.config = config()

    def __call__(self) -> Config:
        return self.config


def midpoint(low: float, high: float) -> float:
    """The jitter, fixed: half way."""
    return (low + high) / 2


def sender(
    store: SqliteStore, poster: FakePoster, clock: FakeClock, current: Running | None = None
) -> tuple[ReceiptSender, Metrics]:
    metrics = Metrics()
    live = current or Running()
    return ReceiptSender(store, poster, live, metrics, clock, uniform=midpoint), metrics


async def finished(
    store: SqliteStore, message_id: str, chat: int = 42, *, fail: bool = False
) -> int:
    """A producer's message to ``chat``, delivered (or failed: blocked): its delivery id."""
    request = f'{{"text":"{message_id}"}}'
    (done,) = await store.accept_messages(
        [
            NewMessage(
                key=message_key("billing", message_id),
                producer="billing",
                message_id=message_id,
                request_hash=hashlib.sha256(request.encode()).hexdigest(),
                request=request,
                deliveries=[NewDelivery(chat, None, False, "", message_id)],
                line=producer_line("billing"),
                receipts=True,
            )
        ],
        republish_after=timedelta(seconds=30),
    )
    (d,) = done.message.deliveries
    assert await store.claim(d.id, lease=LEASE, begin=True) is not None
    if fail:
        assert await store.apply(T.failed, d.id, reason=Reason.FORBIDDEN, error="blocked")
    else:
        thread = thread_change(None, None, False)
        assert await store.mark_delivered(d.id, 900, plain_text=False, reply_to=None, thread=thread)
    return d.id


def metric(metrics: Metrics, outcome: str) -> float:
    labels = {"producer": "billing", "outcome": outcome}
    return metrics.registry.get_sample_value("alertbridge_receipts_total", labels) or 0.0


def due_in(path: Path, clock: FakeClock) -> float:
    with sqlite3.connect(path) as db:
        (due,) = db.execute("SELECT next_attempt_at FROM receipts").fetchone()
    return float(due) - clock.time()


async def test_a_receipt_is_signed_with_hmac_sha256_of_its_exact_body(
    store: SqliteStore, clock: FakeClock
) -> None:
    d = await finished(store, "inv-1")
    poster = FakePoster()
    outbox, metrics = sender(store, poster, clock)

    assert await outbox.tick() == 1

    (post,) = poster.posts
    expected = "sha256=" + hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.url == URL
    assert post.headers["X-Alertbridge-Signature"] == expected
    assert post.headers["Content-Type"] == "application/json"
    sent = json.loads(post.body)
    assert post.headers["X-Alertbridge-Event-Id"] == sent["event_id"]
    assert sent == {
        "event": "message.delivered",
        "event_id": sent["event_id"],
        "producer": "billing",
        "message_id": "inv-1",
        "chat_id": 42,
        "recipient": None,  # a message to a recipient names it, and chat_id is null
        "status": "delivered",
        "attempts": 1,
        "telegram_message_id": 900,
        "error": None,
        "reason": None,
        "at": "2026-09-21T14:13:20.000000Z",  # FakeClock.EPOCH, in UTC
    }
    # Another key, or one byte more, would not verify.
    wrong = "sha256=" + hmac.new(b"other", post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Alertbridge-Signature"] != wrong
    (receipt,) = await store.receipts("billing", "inv-1")
    assert (receipt.delivery_id, receipt.state.value) == (d, "sent")
    assert metric(metrics, "sent") == 1
    assert await outbox.tick() == 0 and len(poster.posts) == 1  # sent: never again


async def test_a_failed_delivery_s_receipt_says_why(store: SqliteStore, clock: FakeClock) -> None:
    await finished(store, "blocked", fail=True)
    poster = FakePoster()
    outbox, _ = sender(store, poster, clock)
    await outbox.tick()
    (post,) = poster.posts
    sent = json.loads(post.body)
    assert (sent["event"], sent["status"], sent["reason"]) == (
        "message.failed",
        "failed",
        "forbidden",
    )


async def test_not_taken_is_retried_with_capped_exponential_backoff(
    store: SqliteStore, clock: FakeClock, db_path: Path
) -> None:
    await finished(store, "inv-1")
    poster = FakePoster(default=Answer(500))
    outbox, metrics = sender(store, poster, clock)
    schedule = []
    bodies = set()
    for _ in range(6):
        assert await outbox.tick() == 1
        bodies.add(poster.posts[-1].body)
        wait = due_in(db_path, clock)
        schedule.append(wait)
        clock.advance(wait - 0.001)
        assert await outbox.tick() == 0  # not due a moment early
        clock.advance(0.001)
    # Equal jitter at its midpoint: 3/4 of min(40, 5 * 2**n).
    assert schedule == pytest.approx([3.75, 7.5, 15, 30, 30, 30])
    assert len(bodies) == 1  # every retry sends the same bytes
    assert metric(metrics, "retried") == 6 and metric(metrics, "sent") == 0

    poster.default = Answer(204)
    assert await outbox.tick() == 1
    (receipt,) = await store.receipts("billing", "inv-1")
    assert (receipt.state.value, receipt.attempts) == ("sent", 7)
    assert metric(metrics, "sent") == 1


def test_the_last_try_is_at_the_deadline_and_a_failure_there_gives_up() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    policy = RetryPolicy(timedelta(seconds=5), timedelta(minutes=10), timedelta(hours=24))
    receipt = Receipt(1, "e", "message.delivered", "billing", at, attempts=40)
    just_before = at + timedelta(hours=24) - timedelta(seconds=30)
    assert after_failure(receipt, just_before, policy, midpoint) == Retry(timedelta(seconds=30))
    assert after_failure(receipt, at + timedelta(hours=24), policy, midpoint) == GiveUp()
    # The jitter is half of the wait: between 1/2 and all of it.
    early = after_failure(receipt, at, policy, lambda low, high: low)
    late = after_failure(receipt, at, policy, lambda low, high: high)
    assert (early, late) == (Retry(timedelta(minutes=5)), Retry(timedelta(minutes=10)))


async def test_a_receipt_nobody_takes_is_given_up_24_hours_after_its_event(
    store: SqliteStore, clock: FakeClock, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await finished(store, "inv-9", chat=43)
    event_at = clock.time()
    poster = FakePoster(default=Answer(None, "ConnectionRefusedError: refused"))
    outbox, metrics = sender(store, poster, clock)
    caplog.set_level(logging.INFO, logger="bridge.outbox")

    while True:
        assert clock.time() - event_at <= 24 * 3600, "still retried after the deadline"
        assert await outbox.tick() == 1
        if (await store.receipts("billing", "inv-9"))[0].state.value != "pending":
            break
        clock.advance(due_in(db_path, clock))

    (receipt,) = await store.receipts("billing", "inv-9")
    assert receipt.state.value == "gave_up"
    assert receipt.last_error == "ConnectionRefusedError: refused"
    assert clock.time() - event_at == pytest.approx(24 * 3600)  # the last try at the deadline
    assert metric(metrics, "gave_up") == 1
    assert metric(metrics, "retried") == len(poster.posts) - 1
    (given_up,) = [r for r in caplog.records if "given up" in r.getMessage()]
    text = given_up.getMessage()
    assert "billing" in text and "inv-9" in text and "chat 43" in text
    assert receipt.event_id in text
    assert await outbox.tick() == 0


async def test_two_senders_at_once_post_each_event_once(
    store: SqliteStore, clock: FakeClock
) -> None:
    for i in range(5):
        await finished(store, f"m{i}")
    poster = FakePoster()
    poster.gate = asyncio.Event()
    first, _ = sender(store, poster, clock)
    second, _ = sender(store, poster, clock)

    both = asyncio.gather(first.tick(), second.tick(), first.tick())
    while len(poster.posts) < 5:  # every receipt is in some sender's hands
        await asyncio.sleep(0)
    poster.gate.set()
    assert sum(await both) == 5
    assert await first.tick() == 0 and await second.tick() == 0

    ids = [p.headers["X-Alertbridge-Event-Id"] for p in poster.posts]
    assert len(ids) == len(set(ids)) == 5


async def test_a_sender_that_died_mid_post_leaves_the_receipt_due_after_its_lease(
    store: SqliteStore, clock: FakeClock
) -> None:
    await finished(store, "inv-1")
    claimed = await store.claim_receipts(limit=5, lease=LEASE)  # then the process died
    assert len(claimed) == 1
    poster = FakePoster()
    outbox, _ = sender(store, poster, clock)
    assert await outbox.tick() == 0
    clock.advance(LEASE.total_seconds())
    assert await outbox.tick() == 1
    (post,) = poster.posts
    assert json.loads(post.body)["event_id"] == claimed[0].event_id  # the same event, again


async def test_a_producer_removed_by_a_reload_gives_its_receipts_up(
    store: SqliteStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await finished(store, "inv-1")
    await finished(store, "inv-2")
    running = Running()
    poster = FakePoster()
    outbox, metrics = sender(store, poster, clock, running)
    caplog.set_level(logging.WARNING, logger="bridge.outbox")

    running.config = config(producer=False)
    assert await outbox.tick() == 2
    assert poster.posts == []
    assert metric(metrics, "unconfigured") == 2
    assert "no longer in the config" in caplog.text and "inv-1" in caplog.text
    for message_id in ("inv-1", "inv-2"):
        (receipt,) = await store.receipts("billing", message_id)
        assert receipt.state.value == "gave_up"


async def test_a_callback_url_removed_by_a_reload_gives_its_receipts_up(
    store: SqliteStore, clock: FakeClock
) -> None:
    await finished(store, "inv-1")
    running = Running()
    running.config = config(callback=False)
    outbox, metrics = sender(store, FakePoster(), clock, running)
    assert await outbox.tick() == 1
    (receipt,) = await store.receipts("billing", "inv-1")
    assert (receipt.state.value, receipt.last_error) == (
        "gave_up",
        "the producer has no callback_url any more",
    )
    assert metric(metrics, "unconfigured") == 1


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Answer(200), "sent"),
        (Answer(204), "sent"),
        (Answer(302), "retried"),  # a redirect is not followed, nor taken
        (Answer(404), "retried"),
        (Answer(503), "retried"),
        (Answer(None, "TimeoutError"), "retried"),
    ],
)
async def test_only_a_2xx_takes_a_receipt(
    store: SqliteStore, clock: FakeClock, answer: Answer, outcome: str
) -> None:
    await finished(store, "inv-1")
    outbox, metrics = sender(store, FakePoster(default=answer), clock)
    await outbox.tick()
    assert metric(metrics, outcome) == 1


def test_the_readme_s_verification_accepts_a_receipt_and_nothing_else() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Receipts") :]
    start = section.index("```python") + len("```python")
    snippet = section[start : section.index("```", start)]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # the README's own code, as a reader copies it
    verify = namespace["verify"]
    assert callable(verify)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    payload = body(Receipt(1, "e1", "message.delivered", "billing", at, {"status": "delivered"}))
    signed = hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()
    assert verify(SECRET.encode(), payload, f"sha256={signed}")
    assert not verify(SECRET.encode(), payload + b" ", f"sha256={signed}")
    assert not verify(b"another key", payload, f"sha256={signed}")


def test_the_body_is_the_same_bytes_for_the_same_row() -> None:
    at = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
    receipt = Receipt(7, "abc", "message.failed", "billing", at, {"status": "failed"}, 3, "m", 42)
    assert body(receipt) == body(receipt)
    assert body(receipt) == (
        b'{"event":"message.failed","event_id":"abc","producer":"billing",'
        b'"message_id":"m","chat_id":42,"status":"failed","at":"2026-12-01T12:00:00.123456Z"}'
    )


# -- config ---------------------------------------------------------------------------

PRODUCER = """\
telegram:
  token: "123:ABC"
route:
  chats: [-1001]
producers:
  billing:
    token: t
    callback_url: https://billing.internal/receipts
"""


def test_a_callback_url_without_a_secret_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"c.yml:6: producers\.billing: callback_url needs"):
        parse_config(PRODUCER, source="c.yml")


def test_the_callback_secret_is_read_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "hmac").write_text("from-a-file\n")
    text = PRODUCER + "    callback_secret_file: hmac\n"
    loaded = parse_config(text, source="c.yml", base_dir=tmp_path)
    assert loaded.producers is not None
    assert loaded.producers["billing"].callback_secret == "from-a-file"
    with pytest.raises(ConfigError, match=r"c.yml:9: cannot read callback_secret_file"):
        parse_config(
            PRODUCER + "    callback_secret_file: nope\n", source="c.yml", base_dir=tmp_path
        )


def test_a_callback_url_must_be_http() -> None:
    text = (
        PRODUCER.replace("https://billing.internal/receipts", "ftp://x")
        + "    callback_secret: s\n"
    )
    with pytest.raises(ConfigError, match=r"c.yml:\d+: producers\.billing\.callback_url"):
        parse_config(text, source="c.yml")


def test_the_readme_lists_the_receipts_defaults() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("\nreceipts:") + 1
    block = readme[start : readme.index("\ntelegram:", start)]
    listed = yaml.safe_load(block)["receipts"]
    assert ReceiptsConfig.model_validate(listed) == ReceiptsConfig()
    assert set(listed) == set(ReceiptsConfig.model_fields)


@pytest.mark.parametrize("callback", [True, False])
async def test_a_message_wants_receipts_when_its_producer_has_a_callback_url(
    store: SqliteStore, callback: bool
) -> None:
    current = config(callback=callback)
    deps = ReceiverDeps(
        rules=Rules.from_config(current), store=store, publisher=FakePublisher(), metrics=Metrics()
    )
    assert current.producers is not None
    producer = current.producers["billing"]
    body = {"message_id": "m", "chat_id": 42, "text": "hi"}
    checked = prepare(deps, "billing", producer, body, None, linked={})
    assert checked.message is not None and checked.message.receipts is callback


def test_the_transitions_that_write_receipts_are_those_that_end_a_delivery() -> None:
    """The stores write a receipt for exactly these (Transition.finishes); a new
    transition into a final state gets receipts without another line of code."""
    finishing = {t.name for t in T.all() if t.finishes}
    assert finishing == {
        "delivered",
        "failed",
        "ambiguous_assume_sent",
        "lease_expired_assume_sent",
        "digested",
    }
