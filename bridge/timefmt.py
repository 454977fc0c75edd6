"""How times and durations are written for people: in the configured zone, in
the two largest units. Pure; the templates' filters and the bot both use it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


def as_timedelta(value: timedelta | float | int) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"duration expects a timedelta or seconds, not {type(value).__name__}")
    return timedelta(seconds=value)


def duration(value: timedelta | float | int) -> str:
    """``3900`` or ``timedelta(hours=1, minutes=5)`` -> ``"1h 5m"``.

    The two largest units, the second left out when it is zero; negative
    durations (clock skew) are ``"0s"``.
    """
    seconds = int(as_timedelta(value).total_seconds())
    if seconds <= 0:
        return "0s"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts: list[tuple[int, str]] = []
    for suffix, size in units:
        amount, seconds = divmod(seconds, size)
        if amount or parts:
            parts.append((amount, suffix))
        if len(parts) == 2:
            break
    return " ".join(f"{amount}{suffix}" for amount, suffix in parts if amount)


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, str):
        return utc(datetime.fromisoformat(value))
    raise TypeError(f"expected a datetime, not {type(value).__name__}")


def local_time(value: datetime | str, zone: str, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    """``value`` as the clock in ``zone`` shows it: how every time a person reads is written."""
    moment = as_datetime(value)
    if zone != "UTC":
        moment = moment.astimezone(ZoneInfo(zone))
    return moment.strftime(fmt)
