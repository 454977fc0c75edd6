"""Exponential backoff with equal jitter: the one formula for every wait on something away.

Telegram retries, a store or broker that is down at start, a claim or a
record that met a store outage: all wait this way, so a fleet that lost a
dependency at the same instant does not come back at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**62 of any sane initial wait is past every cap; the exponent stops there
# so a very long outage cannot overflow the float arithmetic.
_MAX_DOUBLINGS = 62


def jittered(
    attempt: int,
    *,
    initial: float,
    cap: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1): half
    of min(cap, initial * 2**(attempt-1)) fixed, the other half random (``uniform``,
    passed in where a test needs the schedule exact)."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    ceiling = min(cap, initial * 2.0**doublings)
    return ceiling / 2 + uniform(0, ceiling / 2)
