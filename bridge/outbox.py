"""The worker side of producers' receipts: claim due rows of the outbox, POST each
to its producer's ``callback_url``, signed, and record what became of it.

The rows are written by the store with the transition that finishes a delivery
(``bridge/store/sql.py`` ``receipt_rows``); what a row's body is, how it is
signed and when a failed one is tried again is ``bridge/receipts.py``. Here is
only the I/O, passed in: the store, the poster (HTTP), the config in force, the
clock.

Several processes may send at once: a claim takes disjoint rows (PostgreSQL's
SKIP LOCKED; SQLite's one writer) and pushes each past a lease, so a sender that
dies mid-POST leaves its rows due again after it. A 2xx that is lost on its way
back sends the receipt again: at least once, and producers deduplicate by
``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp

from bridge.clock import Clock
from bridge.config import Config, ReceiptsConfig
from bridge.errors import StoreUnavailable
from bridge.metrics import Metrics
from bridge.receipts import (
    GiveUp,
    Receipt,
    ReceiptOutcome,
    RetryPolicy,
    Uniform,
    after_failure,
    body,
    headers,
    taken,
)
from bridge.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one POST got: the HTTP status, or None with what went wrong (refused,
    reset, timed out)."""

    status: int | None
    error: str | None = None


class Poster(Protocol):
    async def post(
        self, url: str, payload: bytes, headers: Mapping[str, str], *, within: float
    ) -> Answer: ...


class AiohttpPoster:
    """POSTs with aiohttp (a dependency already, through aiogram). Redirects are not
    followed: a receipt is taken by a 2xx from the URL configured, nowhere else."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @classmethod
    def create(cls) -> AiohttpPoster:
        return cls(aiohttp.ClientSession(headers={"User-Agent": "alertbridge-receipts"}))

    async def post(
        self, url: str, payload: bytes, headers: Mapping[str, str], *, within: float
    ) -> Answer:
        try:
            async with self._session.post(
                url,
                data=payload,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=within),
                allow_redirects=False,
            ) as response:
                return Answer(response.status)
        except TimeoutError:
            return Answer(None, f"no answer within {within:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self._session.close()


def lease(settings: ReceiptsConfig) -> timedelta:
    """How long a claimed receipt is not due again: longer than any POST may take."""
    return settings.timeout * 2 + timedelta(seconds=5)


class ReceiptSender:
    def __init__(
        self,
        store: Store,
        poster: Poster,
        current: Callable[[], Config],
        metrics: Metrics,
        clock: Clock,
        *,
        uniform: Uniform = random.uniform,
    ) -> None:
        """``current``: the config in force, asked at each pass (a reload changes it);
        ``uniform``: the jitter's randomness (a test's is fixed)."""
        self._store = store
        self._poster = poster
        self._current = current
        self._metrics = metrics
        self._clock = clock
        self._uniform = uniform

    async def tick(self) -> int:
        """Claim what is due, send it, record it; how many receipts were handled."""
        settings = self._current().receipts
        claimed = await self._store.claim_receipts(
            limit=settings.concurrency, lease=lease(settings)
        )
        results = await asyncio.gather(
            *(self._send(receipt, settings) for receipt in claimed), return_exceptions=True
        )
        for receipt, result in zip(claimed, results, strict=True):
            if isinstance(result, StoreUnavailable):
                # The row stays claimed until its lease ends, then is sent again.
                log.warning(
                    "receipt %s (producer %s, message_id %s): could not record it: %s",
                    receipt.event_id,
                    receipt.producer,
                    receipt.message_id,
                    result,
                )
            elif isinstance(result, BaseException):
                raise result
        self._metrics.receipts_pending.set(await self._store.pending_receipts())
        return len(claimed)

    async def _send(self, receipt: Receipt, settings: ReceiptsConfig) -> None:
        producer = (self._current().producers or {}).get(receipt.producer)
        if producer is None or producer.callback_url is None or producer.callback_secret is None:
            why = (
                "the producer is no longer in the config"
                if producer is None
                else "the producer has no callback_url any more"
            )
            await self._store.receipt_not_taken(
                receipt.id, receipt.attempts, error=why, retry_in=None
            )
            self._count(receipt, ReceiptOutcome.UNCONFIGURED)
            log.warning(
                "receipt %s %s given up: %s (producer %s, message_id %s, chat %s)",
                receipt.event_id,
                receipt.event,
                why,
                receipt.producer,
                receipt.message_id,
                receipt.chat_id,
            )
            return
        payload = body(receipt)
        answer = await self._poster.post(
            producer.callback_url,
            payload,
            headers(producer.callback_secret, receipt, payload),
            within=settings.timeout.total_seconds(),
        )
        if taken(answer.status):
            await self._store.receipt_sent(receipt.id)
            self._count(receipt, ReceiptOutcome.SENT)
            log.info(
                "receipt %s %s sent (producer %s, message_id %s, chat %s, attempt %d)",
                receipt.event_id,
                receipt.event,
                receipt.producer,
                receipt.message_id,
                receipt.chat_id,
                receipt.attempts,
            )
            return
        error = answer.error or f"HTTP {answer.status}"
        policy = RetryPolicy(settings.backoff_initial, settings.backoff_max, settings.give_up_after)
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        step = after_failure(receipt, now, policy, self._uniform)
        if isinstance(step, GiveUp):
            await self._store.receipt_not_taken(
                receipt.id, receipt.attempts, error=error, retry_in=None
            )
            self._count(receipt, ReceiptOutcome.GAVE_UP)
            log.warning(
                "receipt %s %s given up after %d attempts over %s: %s "
                "(producer %s, message_id %s, chat %s)",
                receipt.event_id,
                receipt.event,
                receipt.attempts,
                settings.give_up_after,
                error,
                receipt.producer,
                receipt.message_id,
                receipt.chat_id,
            )
            return
        await self._store.receipt_not_taken(
            receipt.id, receipt.attempts, error=error, retry_in=step.delay
        )
        self._count(receipt, ReceiptOutcome.RETRIED)
        log.info(
            "receipt %s %s not taken (%s): again in %.1fs (producer %s, message_id %s, chat %s)",
            receipt.event_id,
            receipt.event,
            error,
            step.delay.total_seconds(),
            receipt.producer,
            receipt.message_id,
            receipt.chat_id,
        )

    def _count(self, receipt: Receipt, outcome: ReceiptOutcome) -> None:
        self._metrics.receipts.labels(receipt.producer, outcome).inc()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a full batch is followed at once by the next; otherwise the
        sender waits ``receipts.interval``. The POSTs in hand finish before it returns."""
        while not stop.is_set():
            interval = self._current().receipts.interval.total_seconds()
            handled = 0
            try:
                handled = await self.tick()
            except StoreUnavailable as exc:
                log.warning("receipts: %s; trying again in %.0fs", exc, interval)
            except Exception:
                log.exception("receipts: the pass failed; trying again in %.0fs", interval)
            if handled >= self._current().receipts.concurrency:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
