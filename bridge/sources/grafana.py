"""Grafana unified alerting's webhook contact point.

Its payload is Alertmanager's (Grafana embeds Alertmanager) with a few extra
fields and ``version: "1"``; the extras are ignored, the rest parses the same.
"""

from __future__ import annotations

from pydantic import ValidationError, field_validator

from bridge.models import Notification
from bridge.sources.alertmanager import AlertmanagerWebhook, payload_error, to_notification

SOURCE = "grafana"


class GrafanaWebhook(AlertmanagerWebhook):
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
    return to_notification(payload, SOURCE)
