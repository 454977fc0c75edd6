"""The data that flows through the bridge: one normalized model for every source."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class Status(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One webhook call, whatever its source, in the shape the rest of the flow reads."""

    source: str
    receiver: str
    group_key: str
    status: Status
    alerts: tuple[Alert, ...]
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one notification goes: a chat, optionally a forum topic, how it looks."""

    chat_id: int
    thread_id: int | None = None
    template: str = "default"
    silent: bool = False
