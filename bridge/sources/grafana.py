"""Grafana unified alerting's webhook contact point.

Its payload is Alertmanager's (Grafana embeds Alertmanager) with
``version: "1"`` and Grafana's own fields, named as Grafana's code names them
(grafana/alerting: receivers/webhook ``webhookMessage`` embedding
templates/template_data.go ``ExtendedData``, alerts of ``ExtendedAlert``):
each alert's ``values`` (``null`` when the rule has none) and
``valueString``, its ``dashboardURL``, ``panelURL``, ``silenceURL`` and
``imageURL``; the notification's ``title``, ``message``, ``state`` and
``orgId``. They only decorate the message, so they are read leniently (see
bridge/sources/alertmanager.py).

Grafana itself leaves its internal labels (``__alert_rule_uid__`` ...) out
of alert and common labels, but not out of ``groupLabels``, and older
versions sent them everywhere; the shared rule in bridge/sources hides them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationError, field_validator

from bridge.models import Notification
from bridge.sources.alertmanager import (
    AlertmanagerAlert,
    LenientText,
    Text,
    WebhookFields,
    lenient,
    payload_error,
    to_alert,
    to_notification,
)

SOURCE = "grafana"


class GrafanaAlert(AlertmanagerAlert):
    values: Annotated[dict[Text, float], lenient(dict)] = Field(default_factory=dict)
    value_string: LenientText = Field(default="", alias="valueString")
    dashboard_url: LenientText = Field(default="", alias="dashboardURL")
    panel_url: LenientText = Field(default="", alias="panelURL")
    silence_url: LenientText = Field(default="", alias="silenceURL")
    image_url: LenientText = Field(default="", alias="imageURL")


class GrafanaWebhook(WebhookFields):
    alerts: list[GrafanaAlert] = Field(min_length=1)
    title: LenientText = ""
    message: LenientText = ""
    # "alerting" or "ok": the status in Grafana's older words; status says it.
    state: LenientText = ""
    org_id: Annotated[int | None, lenient(lambda: None)] = Field(default=None, alias="orgId")

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: str) -> str:
        if version != "1":
            raise ValueError(f"Grafana webhook version {version!r} is not supported; expected '1'")
        return version


def parse(body: bytes) -> Notification:
    try:
        payload = GrafanaWebhook.model_validate_json(body)
    except ValidationError as exc:
        raise payload_error(exc, "Grafana webhook") from exc
    alerts = tuple(
        to_alert(
            a,
            values=a.values,
            value_string=a.value_string,
            dashboard_url=a.dashboard_url,
            panel_url=a.panel_url,
            silence_url=a.silence_url,
            image_url=a.image_url,
        )
        for a in payload.alerts
    )
    return to_notification(payload, SOURCE, alerts, title=payload.title, message=payload.message)
