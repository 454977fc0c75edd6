"""Builders for Alertmanager webhook payloads, shaped exactly as Alertmanager sends them."""

from __future__ import annotations

import hashlib
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"


def alert(
    name: str = "HighLatency",
    *,
    status: str = "firing",
    severity: str = "warning",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    starts_at: str = "2026-11-20T10:00:00Z",
    ends_at: str = ZERO_TIME,
) -> dict[str, Any]:
    all_labels = {"alertname": name, "severity": severity, **(labels or {})}
    fingerprint = hashlib.sha256(repr(sorted(all_labels.items())).encode()).hexdigest()[:16]
    return {
        "status": status,
        "labels": all_labels,
        "annotations": annotations or {"summary": f"{name} is firing"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": f"http://prometheus:9090/graph?g0.expr={name}",
        "fingerprint": fingerprint,
    }


def webhook(
    *alerts: dict[str, Any],
    receiver: str = "telegram",
    status: str | None = None,
    group_key: str | None = None,
    external_url: str = "http://alertmanager-0:9093",
) -> dict[str, Any]:
    alerts = alerts or (alert(),)
    common = dict(alerts[0]["labels"])
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    if status is None:
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    if group_key is None:
        group_key = '{}:{alertname="' + common.get("alertname", "mixed") + '"}'
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": list(alerts),
    }
