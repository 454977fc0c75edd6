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
from dataclasses import replace
from datetime import datetime
from typing import Any

from bridge.config import GenericSourceConfig
from bridge.errors import PayloadError
from bridge.models import Alert, Notification, Status
from bridge.sources import unstorable, utc_time, visible

# A path the body does not have; None is the body's own null.
_MISSING = object()


def _lookup(node: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isascii()
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _text(value: Any, field: str) -> str:
    """A JSON value as text: a string as it is, anything else as its JSON."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (RecursionError, ValueError) as exc:
            raise PayloadError(f"{field}: nested too deeply to show", field=field) from exc
    problem = unstorable(text)
    if problem is not None:
        raise PayloadError(f"{field}: {problem}", field=field)
    return text


def _optional(item: Any, path: str, where: str) -> str | None:
    """The text at ``path``, or None when the body lacks it or says null."""
    value = _lookup(item, path)
    if value is _MISSING or value is None:
        return None
    return _text(value, f"{where}.{path}")


def _required(item: Any, path: str, where: str) -> str:
    text = _optional(item, path, where)
    if text is None:
        field = f"{where}.{path}"
        raise PayloadError(f"{field}: missing (the source's config reads it)", field=field)
    return text


def _alert(item: Any, settings: GenericSourceConfig, name: str, where: str) -> Alert:
    if not isinstance(item, Mapping):
        raise PayloadError(f"{where}: expected a JSON object", field=where)
    status_value = _required(item, settings.status, where)
    status = Status.FIRING if status_value in settings.firing_values else Status.RESOLVED

    labels: dict[str, str] = {}
    if settings.labels_from is not None:
        extra = _lookup(item, settings.labels_from)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                field = f"{where}.{settings.labels_from}.{key}"
                labels[_text(key, field)] = _text(value, field)
    for label, path in settings.labels.items():
        if (value := _optional(item, path, where)) is not None:
            labels[label] = value
    labels.setdefault("alertname", name)
    annotations = {
        key: value
        for key, path in settings.annotations.items()
        if (value := _optional(item, path, where)) is not None
    }

    if settings.fingerprint is not None:
        fingerprint = _required(item, settings.fingerprint, where)
    else:  # over every label, internal ones included
        canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]

    starts_at = None
    if settings.starts_at is not None:
        raw = _optional(item, settings.starts_at, where)
        if raw is not None:
            field = f"{where}.{settings.starts_at}"
            try:
                starts_at = utc_time(datetime.fromisoformat(raw.replace("Z", "+00:00")))
            except ValueError as exc:
                raise PayloadError(
                    f"{field}: {raw!r} is not a usable RFC 3339 time ({exc})", field=field
                ) from None
    url = _optional(item, settings.url, where) if settings.url is not None else None
    return Alert(
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=visible(annotations),
        starts_at=starts_at,
        ends_at=None,
        generator_url=url or "",
    )


def parse(body: bytes, settings: GenericSourceConfig, name: str) -> Notification:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", status=400) from exc
    except RecursionError as exc:
        raise PayloadError("body is not valid JSON: nested too deeply", status=400) from exc
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
        # Grouped by every label, shown without the internal ones.
        alerts=tuple(replace(a, labels=visible(a.labels)) for a in alerts),
        group_labels=visible(group_labels),
        common_labels=visible(common),
    )
