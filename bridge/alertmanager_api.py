"""Alertmanager's API v2, as the bot uses it: alerts, silences, and failover.

With several URLs (an HA pair) each call goes to the first Alertmanager that
answers; a replica that is down or answers 5xx is skipped. Silences are
gossiped between replicas, so creating one on either is enough.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from bridge.config import AlertmanagerApiConfig
from bridge.errors import AlertmanagerError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    state: str
    matchers: list[dict[str, Any]]
    ends_at: str
    created_by: str
    comment: str


def silence_matchers(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Exact-equality matchers for ``labels``, the way Alertmanager's UI makes them."""
    return [
        {"name": name, "value": value, "isRegex": False, "isEqual": True}
        for name, value in sorted(labels.items())
    ]


class AlertmanagerClient:
    def __init__(self, settings: AlertmanagerApiConfig, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session
        self._headers: dict[str, str] = {}
        if settings.bearer_token:
            self._headers["Authorization"] = f"Bearer {settings.bearer_token}"
        elif settings.basic is not None:
            pair = f"{settings.basic.username}:{settings.basic.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()

    @property
    def ui_url(self) -> str:
        """Where people look: the first configured Alertmanager."""
        return self._settings.urls[0]

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> tuple[str, Any]:
        """(the Alertmanager that answered, its JSON), trying each URL in turn."""
        problems: list[str] = []
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout.total_seconds())
        for base in self._settings.urls:
            try:
                async with self._session.request(
                    method,
                    f"{base}/api/v2{path}",
                    json=json,
                    params=params,
                    headers=self._headers,
                    timeout=timeout,
                ) as response:
                    body = await response.text()
                    if response.status >= 500:
                        problems.append(f"{base}: {response.status} {body.strip()[:200]}")
                        continue
                    if response.status >= 400:
                        # A 4xx would be the same on every replica: say it, do not fail over.
                        raise AlertmanagerError(
                            f"{base} refused {method} {path}: {response.status} "
                            f"{body.strip()[:300]}"
                        )
                    return base, (await response.json(content_type=None) if body else None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems.append(f"{base}: {type(exc).__name__}: {exc}")
                log.warning("alertmanager %s unreachable, trying the next: %s", base, exc)
        raise AlertmanagerError(
            "no Alertmanager answered (" + "; ".join(problems) + "); check alertmanager.urls"
        )

    async def firing_alerts(self) -> list[dict[str, Any]]:
        """Active alerts, not silenced or inhibited, oldest first."""
        _, alerts = await self._call(
            "GET",
            "/alerts",
            params={"active": "true", "silenced": "false", "inhibited": "false"},
        )
        return sorted(alerts or [], key=lambda a: (a.get("startsAt", ""), a.get("fingerprint", "")))

    async def silences(self) -> list[Silence]:
        """Active and pending silences, soonest to end first."""
        _, raw = await self._call("GET", "/silences")
        found = [
            Silence(
                id=s["id"],
                state=s["status"]["state"],
                matchers=s.get("matchers", []),
                ends_at=s.get("endsAt", ""),
                created_by=s.get("createdBy", ""),
                comment=s.get("comment", ""),
            )
            for s in raw or []
            if s.get("status", {}).get("state") in ("active", "pending")
        ]
        return sorted(found, key=lambda s: s.ends_at)

    async def create_silence(
        self,
        labels: Mapping[str, str],
        *,
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> tuple[str, str]:
        """(the silence id, the Alertmanager that has it)."""
        base, answer = await self._call(
            "POST",
            "/silences",
            json={
                "matchers": silence_matchers(labels),
                "startsAt": starts_at.isoformat(),
                "endsAt": ends_at.isoformat(),
                "createdBy": created_by,
                "comment": comment,
            },
        )
        return str(answer["silenceID"]), base

    async def expire_silence(self, silence_id: str) -> None:
        await self._call("DELETE", f"/silence/{silence_id}")
