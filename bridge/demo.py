"""`alertbridge demo`: the whole product, offline, in one command.

Starts the sandbox Telegram (the Bot API and a chat page on one local port),
runs the bridge in standalone mode against it (SQLite in a temporary
directory, the queue in process, the bot polling, Ack and Silence buttons),
and fires the sample payloads: a group firing, the group growing, the group
resolved, then a storm that the bridge folds into a digest. What Telegram
would show is on the chat page; this terminal says where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bridge.config import Config
from bridge.config_file import parse_config
from bridge.sandbox.server import Sandbox

# The sandbox's own credentials: nothing outside this process accepts them.
TOKEN = "123456:sandbox"  # noqa: S105
WEBHOOK_TOKEN = "demo-webhook-token"  # noqa: S105
PRODUCER_TOKEN = "demo-producer-token"  # noqa: S105
RECEIPT_SECRET = "demo-receipt-secret"  # noqa: S105
ONCALL_CHAT = -1001  # the default route: a group, the critical alerts in its topic 7
DB_CHAT = -1002  # team=db: where the storm lands
STORM_SIZE = 60


@dataclass(frozen=True)
class Step:
    title: str
    payload: dict[str, Any]


def _payload(name: str) -> dict[str, Any]:
    # A checkout has the samples in alertmanager-examples/payloads; a wheel
    # carries the same files as bridge/examples.
    checkout = Path(__file__).resolve().parent.parent / "alertmanager-examples" / "payloads"
    folder = checkout if checkout.is_dir() else Path(str(resources.files("bridge"))) / "examples"
    data: dict[str, Any] = json.loads((folder / name).read_text(encoding="utf-8"))
    return data


def scenario() -> list[Step]:
    """The sample payloads in the order a real incident sends them."""
    firing = _payload("firing.json")
    growing = copy.deepcopy(firing)
    extra = copy.deepcopy(growing["alerts"][-1])
    extra["labels"]["instance"] = "checkout-3:8080"
    extra["annotations"]["summary"] = "5xx rate above 5% on checkout-3"
    extra["fingerprint"] = "c0ffee0000000003"
    growing["alerts"].append(extra)
    steps = [
        Step("a group fires (3 alerts)", firing),
        Step("the same group grows to 4 alerts", growing),
        Step("the group resolves", _payload("resolved.json")),
    ]
    for i in range(STORM_SIZE):
        name = f"ReplicaLag{i % 4}"
        steps.append(Step(f"storm {i + 1}/{STORM_SIZE}", _storm_alert(name, i)))
    return steps


def _storm_alert(name: str, i: int) -> dict[str, Any]:
    labels = {"alertname": name, "team": "db", "severity": "warning", "instance": f"pg-{i}:5432"}
    return {
        "version": "4",
        "groupKey": f'{{}}/{{team="db"}}:{{alertname="{name}", instance="pg-{i}:5432"}}',
        "status": "firing",
        "receiver": "telegram",
        "groupLabels": {"alertname": name, "instance": labels["instance"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.demo:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": f"replication lag above 30 s on pg-{i}"},
                "startsAt": "2026-11-20T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.demo:9090/graph",
                "fingerprint": f"db{i:014x}",
            }
        ],
    }


def demo_config(sandbox_url: str, listen: str, sqlite_path: Path) -> Config:
    """Standalone, against the sandbox: its Bot API, and its Alertmanager API for silences."""
    data = {
        "telegram": {"token": TOKEN, "api_url": sandbox_url},
        "sqlite_path": str(sqlite_path),
        "listen": listen,
        "receiver": {"auth": {"bearer_token": WEBHOOK_TOKEN}},
        "bot": {
            "updates": "polling",
            "buttons": True,
            "allow": {k: {"chats": [ONCALL_CHAT, DB_CHAT]} for k in ("read", "ack", "silence")},
        },
        "alertmanager": {"urls": [sandbox_url]},
        # An application of your own, sending its own messages (the page's form);
        # its receipts go to the sandbox, which shows them on the page.
        "producers": {
            "demo": {
                "token": PRODUCER_TOKEN,
                "chats": [ONCALL_CHAT, DB_CHAT],
                "callback_url": f"{sandbox_url}/sandbox/receipts",
                "callback_secret": RECEIPT_SECRET,
            }
        },
        "receipts": {"interval": "200ms"},
        "rate_limits": {"enabled": True, "digest_after": 10},
        "route": {
            "chats": [ONCALL_CHAT],
            "routes": [
                {"matchers": ['team="db"'], "chats": [DB_CHAT]},
                {"matchers": ['severity="critical"'], "chats": [ONCALL_CHAT], "thread_id": 7},
            ],
        },
    }
    return parse_config(yaml.safe_dump(data), source="<demo config>")


async def run_demo(*, port: int, bridge_port: int, exit_when_done: bool) -> None:
    from bridge.service import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sandbox = Sandbox(token=TOKEN, enforce_rate_limits=True)
    await sandbox.start(port)
    with _workdir() as workdir:
        config = demo_config(sandbox.url, f"127.0.0.1:{bridge_port}", workdir / "alertbridge.db")
        bound: asyncio.Future[str] = loop.create_future()
        bridge = asyncio.create_task(
            run(config, receiver=True, worker=True, stop=stop, listening=bound.set_result)
        )
        try:
            listen = await _served_at(bound, bridge)  # a port of 0: the one the system chose
            sandbox.connect_bridge(
                f"http://{listen}",
                WEBHOOK_TOKEN,
                producer_token=PRODUCER_TOKEN,
                receipt_secret=RECEIPT_SECRET,
            )
            _say(f"bridge up at http://{listen} (standalone: state in {config.sqlite_path})")
            _say(f"chat page: {sandbox.url}/   <- open it: messages, buttons, your own payloads")
            _say(
                "your own message, from a shell: "
                f"ALERTBRIDGE_URL=http://{listen} ALERTBRIDGE_PRODUCER_TOKEN={PRODUCER_TOKEN} "
                f"alertbridge send --chat {ONCALL_CHAT} 'Export <b>ready</b>'"
            )
            # Ctrl-C may come while the samples are still going out: stop there.
            show = asyncio.create_task(_show(f"http://{listen}"))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({show, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if show.done():
                show.result()
                if not exit_when_done:
                    _say("press Ack or Silence there, post your own payload; Ctrl-C stops it")
                    await stopped
            else:
                show.cancel()
            stopped.cancel()
        finally:
            stop.set()
            await bridge
            await sandbox.stop()


async def _show(base: str) -> None:
    await _fire(base, scenario())
    _say(f"{await _settle(base)}; the chat page shows them as Telegram would")


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="alertbridge-demo-") as tmp:
        yield Path(tmp)


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


async def _served_at(bound: asyncio.Future[str], bridge: asyncio.Task[None]) -> str:
    """The address the bridge serves on, once it does; its own error if it stops first."""
    waiting: set[asyncio.Future[Any]] = {bound, bridge}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not bound.done():
        bridge.result()  # the bridge's own error, as it is
        raise RuntimeError("the bridge stopped before it served")
    return bound.result()


async def _fire(base: str, steps: list[Step]) -> None:
    headers = {"authorization": f"Bearer {WEBHOOK_TOKEN}"}
    async with aiohttp.ClientSession(base, headers=headers) as client:
        for step in steps:
            async with client.post("/alertmanager", json=step.payload) as answer:
                body = await answer.text()
                if answer.status != 200:
                    raise RuntimeError(f"the bridge refused the sample: {answer.status} {body}")
            if not step.title.startswith("storm"):
                _say(f"POST /alertmanager: {step.title} -> {body.strip()}")
                await asyncio.sleep(1.5)  # let each message land before the next changes it
        _say(f"POST /alertmanager: a storm of {STORM_SIZE} alerts for team=db -> stored")


async def _settle(base: str, give_up_after: float = 60) -> str:
    """Wait until nothing is left to send; say what became of everything."""
    from prometheus_client.parser import text_string_to_metric_families

    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    await asyncio.sleep(2)  # the depth gauge is the scheduler's, updated each second
    async with aiohttp.ClientSession(base) as client:
        while True:
            async with client.get("/metrics") as answer:
                text = await answer.text()
            families = {f.name: f.samples for f in text_string_to_metric_families(text)}
            depth = int(sum(s.value for s in families.get("alertbridge_queue_depth", [])))
            if depth == 0 or loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
    finished: dict[str, int] = {}
    for sample in families.get("alertbridge_deliveries_finished", []):
        if sample.name.endswith("_total"):
            state = sample.labels["state"]
            finished[state] = finished.get(state, 0) + int(sample.value)
    parts = ", ".join(f"{n} {state}" for state, n in sorted(finished.items()) if n)
    return f"deliveries: {parts or 'none yet'}" + (f"; {depth} still queued" if depth else "")
