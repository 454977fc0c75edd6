"""Time, passed in: the worker, pacer and scheduler wait on a ``Clock`` so tests
can run them on a fake one, in milliseconds and without sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: for waits and rate-limit slots."""

    def time(self) -> float:
        """Unix seconds: for the store's timestamps."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
