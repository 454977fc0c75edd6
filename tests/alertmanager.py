"""The real Alertmanager (Debian's prometheus-alertmanager), on a loopback port it picks.

``--web.listen-address=127.0.0.1:0``: Alertmanager binds a port the system
chooses and logs it (prometheus/exporter-toolkit web.Serve logs "Listening on"
with the listener's own address, after net.Listen), so the test reads its port
from the log instead of guessing a free one.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.processes import Output

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
LISTENING = re.compile(rb'msg="Listening on" address=(\S+)')


class Alertmanager:
    """One Alertmanager process. Gossip is off: each instance is on its own,
    as a broken HA pair would be."""

    def __init__(
        self, workdir: Path, webhook_url: str | None = None, *, group_wait: str = "1s"
    ) -> None:
        """``webhook_url``: where to notify; None for nowhere yet (see :meth:`notify`)."""
        self.url = ""  # known once started
        self._dir = workdir
        self._config: dict[str, Any] = {
            "route": {
                "receiver": "bridge",
                "group_by": ["alertname"],
                "group_wait": group_wait,
                "group_interval": "2s",
                "repeat_interval": "1h",
            },
            "receivers": [_webhook(webhook_url)],
        }
        self._process: subprocess.Popen[bytes] | None = None

    async def notify(self, webhook_url: str) -> None:
        """Notify ``webhook_url`` from now on: for a bridge that needed this
        Alertmanager's URL before it could start. Alertmanager answers
        POST /-/reload once the new config is in use."""
        self._config["receivers"] = [_webhook(webhook_url)]
        (self._dir / "alertmanager.yml").write_text(yaml.safe_dump(self._config))
        async with httpx.AsyncClient(base_url=self.url) as client:
            (await client.post("/-/reload")).raise_for_status()

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
                "--web.listen-address=127.0.0.1:0",
                "--cluster.listen-address=",
                "--log.level=info",  # the "Listening on" line is at info
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self._process.stdout is not None
        self._output = Output(self._process.stdout, LISTENING, sink=self._log)
        try:
            self.url = f"http://{await self._output.address(timeout=30)}"
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            await asyncio.to_thread(self._process.wait, 15)
        self._output.text()  # all of it copied to the log before it is closed
        self._log.close()

    async def fire(self, *alerts: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:
            answer = await client.post("/api/v2/alerts", json=list(alerts))
            answer.raise_for_status()


def _webhook(url: str | None) -> dict[str, Any]:
    if url is None:
        return {"name": "bridge"}  # a receiver that notifies no one
    return {"name": "bridge", "webhook_configs": [{"url": url, "send_resolved": True}]}


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
