"""Deterministic notification keys: the same notification always gets the same id.

Alertmanager retries a webhook it did not see answered, and each replica of an
HA pair sends its own copy. All of those copies must collapse into one
delivery, so the key is built only from what the copies share: never from the
arrival time, the sending replica (``externalURL``) or anything random.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bridge.models import Notification

# A fixed namespace so keys are stable across versions and processes.
NAMESPACE = uuid.UUID("5b0e1f9c-7c1a-4c43-9d0e-6a1b2f6f4a10")


def _instant(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def notification_key(notification: Notification) -> uuid.UUID:
    """UUIDv5 over receiver, group key, status and the sorted alert identities."""
    alerts = sorted(
        (a.fingerprint, a.status.value, _instant(a.starts_at), _instant(a.ends_at))
        for a in notification.alerts
    )
    parts = [
        notification.source,
        notification.receiver,
        notification.group_key,
        notification.status.value,
        *("|".join(alert) for alert in alerts),
    ]
    # NUL cannot occur in any of the parts' JSON-decoded text in practice and
    # keeps ("a", "bc") and ("ab", "c") apart.
    return uuid.uuid5(NAMESPACE, "\x00".join(parts))


def group_ref(notification: Notification) -> uuid.UUID:
    """The alert group's identity: its thread in Telegram, and its ordering line."""
    parts = (notification.source, notification.receiver, notification.group_key)
    return uuid.uuid5(NAMESPACE, "\x00".join(("group", *parts)))
