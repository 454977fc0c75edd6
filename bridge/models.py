"""The data that flows through the bridge: one normalized model for every source."""

from __future__ import annotations

import enum
import uuid
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


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRY = "retry"
    DELIVERED = "delivered"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    SUPPRESSED = "suppressed"


TERMINAL_STATES = frozenset(
    {
        DeliveryState.DELIVERED,
        DeliveryState.FAILED,
        DeliveryState.AMBIGUOUS,
        DeliveryState.SUPPRESSED,
    }
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery: what the worker needs to send one message."""

    id: int
    chat_id: int
    thread_id: int | None
    silent: bool
    text: str
    attempts: int
    plain_text: bool = False
    # The alert group this belongs to, and its open thread in this chat.
    group_ref: uuid.UUID | None = None
    resolves_group: bool = False
    anchor_message_id: int | None = None
    # For logs and the webhook-to-delivered latency.
    group_key: str = ""
    accepted_at: datetime | None = None
    # A storm digest: how many waiting deliveries this one carries.
    coalesced: int = 0
