"""Alertmanager's API v2, as the bot uses it: alerts, silences, and failover.

With several URLs (an HA pair) each call goes to the first Alertmanager that
answers; a replica that is down or answers 5xx is skipped. Silences are
gossiped between replicas, so creating one on either is enough.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
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
    ends_at: datetime
    created_by: str
    comment: str


def _reserved(char: str) -> bool:
    """A character the classic matcher parser cannot take in a bare label name."""
    return char.isspace() or char in "{}!=~,\\\"'`"


def _go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: Alertmanager prints unusual label names with it."""
    out = ['"']
    for char in text:
        if 0xD800 <= ord(char) <= 0xDFFF:  # a lone surrogate: Go decoded it as U+FFFD
            char = "\ufffd"
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable():  # Go's IsPrint: letters, marks, numbers, punctuation,
            out.append(char)  # symbols and the ASCII space, as Python's
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif code < 0x20:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}

#: (isEqual, isRegex) -> Alertmanager's MatchType.String().
_OPERATORS = {(True, False): "=", (False, False): "!=", (True, True): "=~", (False, True): "!~"}


def matcher_string(matcher: Mapping[str, Any]) -> str:
    """An API v2 matcher as Alertmanager prints it (``labels.Matcher.String``).

    ``name!="v"``, ``name=~"v"``, ``name!~"v"``; the value escaped the
    OpenMetrics way, a name the classic parser could not read quoted whole.
    """
    name, value = str(matcher["name"]), str(matcher["value"])
    # The API's own default: a matcher without isEqual is an equality.
    op = _OPERATORS[bool(matcher.get("isEqual", True)), bool(matcher.get("isRegex", False))]
    if any(_reserved(char) for char in name):
        return f"{_go_quote(name)}{op}{_go_quote(value)}"
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'{name}{op}"{escaped}"'


def matchers_string(matchers: Sequence[Mapping[str, Any]]) -> str:
    """Alertmanager's ``labels.Matchers.String``: ``{a="b",c!="d"}``."""
    return "{" + ",".join(matcher_string(m) for m in matchers) + "}"


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
    def identifying_labels(self) -> list[str]:
        """Which labels identify an alert for a silence; empty: all its labels."""
        return self._settings.silence_labels

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
        try:
            found = [
                Silence(
                    id=s["id"],
                    state=s["status"]["state"],
                    matchers=s.get("matchers", []),
                    ends_at=datetime.fromisoformat(s["endsAt"]),
                    created_by=s.get("createdBy", ""),
                    comment=s.get("comment", ""),
                )
                for s in raw or []
                if s.get("status", {}).get("state") in ("active", "pending")
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise AlertmanagerError(
                f"Alertmanager listed a silence it did not describe: {exc!r}"
            ) from exc
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
