"""Alertmanager's webhook payload (version 4), modelled field by field.

The field names are Alertmanager's own (notify/webhook/webhook.go ``Message``
embedding template/template.go ``Data``): note ``notification_reason``, the
one snake_case name, beside camelCase ``routeLabels``.

Three kinds of field, three treatments:

* The core of version 4 (status, labels, fingerprint, times, groupKey,
  receiver, truncatedAlerts, alerts ...) is a stable contract: a value of the
  wrong type is refused with a 422 naming the field. ``null`` for an optional
  one means "not sent".
* Fields that only decorate the message and arrived later (Alertmanager's
  ``notification_reason`` and ``routeLabels``, Grafana's extras) are read
  leniently: a value of an unexpected type is ignored rather than losing the
  alert it came with.
* Unknown fields are ignored, not rejected: Alertmanager adds fields over
  time, and refusing a newer payload would lose the alert it carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from bridge.errors import PayloadError
from bridge.models import Alert, Notification, Status
from bridge.sources import unstorable, utc_time, visible

SOURCE = "alertmanager"

#: More alerts than any store column (or Alertmanager) counts.
MAX_TRUNCATED = 1_000_000_000


def _storable(text: str) -> str:
    problem = unstorable(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _time(value: datetime | None) -> datetime | None:
    return None if value is None else utc_time(value)


Text = Annotated[str, AfterValidator(_storable)]
Labels = dict[Text, Text]
Time = Annotated[datetime | None, AfterValidator(_time)]


def lenient(default: Callable[[], Any]) -> WrapValidator:
    """A decoration field: what does not validate is taken as not sent."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return default()

    return WrapValidator(validate)


LenientText = Annotated[Text, lenient(str)]
LenientLabels = Annotated[Labels, lenient(dict)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_sent(cls, data: Any) -> Any:
        # A hand-made payload says "annotations": null where Alertmanager
        # leaves it out; both mean the default. A required field stays
        # required, and its error says so.
        if not isinstance(data, dict):
            return data
        optional = {
            info.alias or name for name, info in cls.model_fields.items() if not info.is_required()
        }
        return {k: v for k, v in data.items() if v is not None or k not in optional}


class AlertmanagerAlert(Payload):
    status: Status
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    starts_at: Time = Field(default=None, alias="startsAt")
    ends_at: Time = Field(default=None, alias="endsAt")
    generator_url: Text = Field(default="", alias="generatorURL")
    fingerprint: Text = ""


class WebhookFields(Payload):
    """What Alertmanager's and Grafana's webhooks share (Grafana embeds Alertmanager)."""

    version: str
    group_key: Text = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0, le=MAX_TRUNCATED)
    status: Status
    receiver: Text
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: Text = Field(default="", alias="externalURL")


class AlertmanagerWebhook(WebhookFields):
    alerts: list[AlertmanagerAlert] = Field(min_length=1)
    # Alertmanager 0.32+.
    notification_reason: LenientText = ""
    # Alertmanager 0.34+.
    route_labels: LenientLabels = Field(default_factory=dict, alias="routeLabels")

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: str) -> str:
        if version != "4":
            raise ValueError(
                f"webhook version {version!r} is not supported; Alertmanager >= 0.9 sends '4'"
            )
        return version


def fingerprint(alert: AlertmanagerAlert) -> str:
    """Alertmanager always sends one; compute a stable stand-in if a hand-made payload lacks it.

    Over every label, internal ones included: two alerts that differ only
    there are still two alerts.
    """
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
    return to_notification(
        payload,
        SOURCE,
        tuple(to_alert(a) for a in payload.alerts),
        notification_reason=payload.notification_reason,
        route_labels=visible(payload.route_labels),
    )


def to_alert(alert: AlertmanagerAlert, **extra: Any) -> Alert:
    return Alert(
        fingerprint=fingerprint(alert),
        status=alert.status,
        labels=visible(alert.labels),
        annotations=visible(alert.annotations),
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        generator_url=alert.generator_url,
        **extra,
    )


def to_notification(
    payload: WebhookFields, source: str, alerts: tuple[Alert, ...], **extra: Any
) -> Notification:
    return Notification(
        source=source,
        receiver=payload.receiver,
        group_key=payload.group_key,
        status=payload.status,
        alerts=alerts,
        group_labels=visible(payload.group_labels),
        common_labels=visible(payload.common_labels),
        common_annotations=visible(payload.common_annotations),
        external_url=payload.external_url,
        truncated_alerts=payload.truncated_alerts,
        **extra,
    )


def payload_error(exc: ValidationError, kind: str) -> PayloadError:
    """The first problem, named by its field: what the sender's operator needs to fix it."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return PayloadError(f"body is not valid JSON: {first['msg']}", status=400)
    if first["type"] == "model_type" and not first["loc"]:
        return PayloadError(f"body must be a JSON object ({kind})", status=422, field="body")
    field = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return PayloadError(f"{field}: {message}{suffix}", status=422, field=field)
