"""The real Alertmanager (Debian's prometheus-alertmanager), started on loopback ports."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port, wait_http

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    """One Alertmanager process. Gossip is off: each instance is on its own,
    as a broken HA pair would be."""

    def __init__(self, workdir: Path, webhook_url: str, *, group_wait: str = "1s") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = workdir
        self._config = {
            "route": {
                "receiver": "bridge",
                "group_by": ["alertname"],
                "group_wait": group_wait,
                "group_interval": "2s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "bridge",
                    "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
                }
            ],
        }
        self._process: subprocess.Popen[bytes] | None = None

    def use_receiver(self, settings: dict[str, Any]) -> None:
        """Notify through ``settings`` (say, telegram_configs) instead of the bridge."""
        self._config["receivers"] = [{"name": "bridge", **settings}]

    async def start(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        config = self._dir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self._config))
        self._log = (self._dir / "alertmanager.log").open("wb")
        self._process = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        await wait_http(f"{self.url}/-/ready", timeout=30)

    async def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            await asyncio.to_thread(self._process.wait, 15)
        self._log.close()

    async def fire(self, *alerts: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:
            answer = await client.post("/api/v2/alerts", json=list(alerts))
            answer.raise_for_status()


def am_alert(
    name: str, *, starts_at: str = "", resolved: bool = False, **labels: str
) -> dict[str, Any]:
    """An alert as Prometheus posts it: with the startsAt of its firing episode.

    Prometheus sends the same startsAt to every Alertmanager replica; that is
    what lets the bridge recognise their copies (an alert posted without it
    gets each replica's own arrival time).
    """
    now = datetime.now(UTC).isoformat()
    body: dict[str, Any] = {
        "startsAt": starts_at or "2026-11-20T10:00:00Z",
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} <is> & firing"},
        "generatorURL": "http://prometheus:9090/graph",
    }
    if resolved:
        body["endsAt"] = now
    return body
