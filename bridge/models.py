"""The data that flows through the bridge: one normalized model for every source."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class Status(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


#: Alertmanager's ``notification_reason`` (0.32+) for a notification that only
#: repeats the last one: a reminder, not news.
REPEAT_INTERVAL_ELAPSED = "repeat interval elapsed"


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str = ""
    # Grafana's additions: the query values that made the alert fire, and
    # links into Grafana. Empty for other sources.
    values: Mapping[str, float] = field(default_factory=dict)
    value_string: str = ""
    dashboard_url: str = ""
    panel_url: str = ""
    silence_url: str = ""
    image_url: str = ""


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
    # Why Alertmanager sent it ("first notification", "new alerts added",
    # "repeat interval elapsed", ...); empty when the sender does not say.
    # Not part of the notification's key: HA replicas may tell it apart.
    notification_reason: str = ""
    # The labels of the Alertmanager route that sent it (Alertmanager 0.34+).
    route_labels: Mapping[str, str] = field(default_factory=dict)
    # Grafana's own title and message for the notification.
    title: str = ""
    message: str = ""

    @property
    def is_reminder(self) -> bool:
        """Nothing changed since the last notification of this group; it only repeats it."""
        return self.notification_reason == REPEAT_INTERVAL_ELAPSED


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one notification goes: a chat, optionally a forum topic, how it looks."""

    chat_id: int
    thread_id: int | None = None
    template: str = "default"
    silent: bool = False
