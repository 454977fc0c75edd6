"""Alertmanager's webhook payload (version 4), modelled field by field."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.errors import PayloadError
from bridge.models import Alert, Notification, Status

SOURCE = "alertmanager"


class _Payload(BaseModel):
    # Unknown fields are ignored, not rejected: Alertmanager adds fields over
    # time, and refusing a newer payload would lose the alert it carries.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AlertmanagerAlert(_Payload):
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _zero_time_is_unset(cls, value: datetime | None) -> datetime | None:
        # Go's zero time (0001-01-01T00:00:00Z) means "not set".
        return None if value is not None and value.year <= 1 else value


class AlertmanagerWebhook(_Payload):
    version: str
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: Status
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[AlertmanagerAlert] = Field(min_length=1)
    notification_reason: str | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: str) -> str:
        if version != "4":
            raise ValueError(
                f"webhook version {version!r} is not supported; Alertmanager >= 0.9 sends '4'"
            )
        return version


def _fingerprint(alert: AlertmanagerAlert) -> str:
    """Alertmanager always sends one; compute a stable stand-in if a hand-made payload lacks it."""
    if alert.fingerprint:
        return alert.fingerprint
    canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(alert.labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse(body: bytes) -> Notification:
    """Validate a request body; raise PayloadError (400 not JSON, 422 wrong shape)."""
    try:
        payload = AlertmanagerWebhook.model_validate_json(body)
    except ValidationError as exc:
        raise payload_error(exc, "Alertmanager webhook v4") from exc
    return to_notification(payload, SOURCE)


def to_notification(payload: AlertmanagerWebhook, source: str) -> Notification:
    return Notification(
        source=source,
        receiver=payload.receiver,
        group_key=payload.group_key,
        status=payload.status,
        alerts=tuple(
            Alert(
                fingerprint=_fingerprint(a),
                status=a.status,
                labels=a.labels,
                annotations=a.annotations,
                starts_at=a.starts_at,
                ends_at=a.ends_at,
                generator_url=a.generator_url,
            )
            for a in payload.alerts
        ),
        group_labels=payload.group_labels,
        common_labels=payload.common_labels,
        common_annotations=payload.common_annotations,
        external_url=payload.external_url,
        truncated_alerts=payload.truncated_alerts,
    )


def payload_error(exc: ValidationError, kind: str) -> PayloadError:
    """The first problem, named by its field: what the sender's operator needs to fix it."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return PayloadError(f"body is not valid JSON: {first['msg']}", status=400)
    if first["type"] == "model_type" and not first["loc"]:
        return PayloadError(f"body must be a JSON object ({kind})", status=422)
    field = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return PayloadError(f"{field}: {message}{suffix}", status=422, field=field)
