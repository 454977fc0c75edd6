"""Any JSON a tool can POST, mapped to alerts by config.

A source says where in the body its alerts are and which fields give the
status, labels, annotations and identity; from there on the notification goes
through the same keys, routes, templates and threads as Alertmanager's.

    sources:
      uptime:
        alerts: checks              # a list in the body; omit when the body is one alert
        status: state               # dotted path inside each alert
        firing_values: [down, degraded]
        labels: {alertname: name, service: meta.service}
        annotations: {summary: message}
        fingerprint: id             # default: a hash of the labels
        starts_at: since            # an RFC 3339 time
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge.config import GenericSourceConfig
from bridge.errors import PayloadError
from bridge.models import Alert, Notification, Status

_MISSING = object()


def _lookup(node: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _required(item: Any, path: str, where: str) -> Any:
    value = _lookup(item, path)
    if value is _MISSING or value is None:
        raise PayloadError(f"{where}.{path}: missing (the source's config reads it)", field=path)
    return value


def _alert(item: Any, settings: GenericSourceConfig, name: str, where: str) -> Alert:
    if not isinstance(item, Mapping):
        raise PayloadError(f"{where}: expected a JSON object", field=where)
    status_value = _text(_required(item, settings.status, where))
    status = Status.FIRING if status_value in settings.firing_values else Status.RESOLVED

    labels: dict[str, str] = {}
    if settings.labels_from is not None:
        extra = _lookup(item, settings.labels_from)
        if isinstance(extra, Mapping):
            labels.update({str(k): _text(v) for k, v in extra.items()})
    for label, path in settings.labels.items():
        value = _lookup(item, path)
        if value is not _MISSING and value is not None:
            labels[label] = _text(value)
    labels.setdefault("alertname", name)
    annotations = {
        key: _text(value)
        for key, path in settings.annotations.items()
        if (value := _lookup(item, path)) is not _MISSING and value is not None
    }

    if settings.fingerprint is not None:
        fingerprint = _text(_required(item, settings.fingerprint, where))
    else:
        canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]

    starts_at = None
    if settings.starts_at is not None:
        raw = _lookup(item, settings.starts_at)
        if raw is not _MISSING and raw is not None:
            try:
                starts_at = datetime.fromisoformat(_text(raw).replace("Z", "+00:00"))
            except ValueError:
                raise PayloadError(
                    f"{where}.{settings.starts_at}: {raw!r} is not an RFC 3339 time",
                    field=settings.starts_at,
                ) from None
    return Alert(
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=None,
        generator_url=_text(_lookup(item, settings.url)) if settings.url else "",
    )


def parse(body: bytes, settings: GenericSourceConfig, name: str) -> Notification:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", status=400) from exc
    if settings.alerts is None:
        items, where = [document], "body"
    else:
        items = _lookup(document, settings.alerts)
        where = settings.alerts
        if not isinstance(items, list) or not items:
            raise PayloadError(
                f"{settings.alerts}: expected a non-empty list of alerts", field=settings.alerts
            )
    alerts = tuple(_alert(item, settings, name, f"{where}[{i}]") for i, item in enumerate(items))

    common = dict(alerts[0].labels)
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
    group_labels = {k: common[k] for k in settings.group_by if k in common}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
    firing = any(a.status is Status.FIRING for a in alerts)
    return Notification(
        source=name,
        receiver=name,
        group_key=group_key,
        status=Status.FIRING if firing else Status.RESOLVED,
        alerts=alerts,
        group_labels=group_labels,
        common_labels=common,
    )
