"""`alertbridge` as a real subprocess, for the demo and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests.conftest import AMQP_URL, REPO, TOKEN, free_port, wait_http, wait_until


def local_config(database_url: str, telegram_url: str, name: str, chat: int) -> dict[str, Any]:
    """A config against this machine's PostgreSQL and RabbitMQ and a Telegram double."""
    return {
        "telegram": {"token": TOKEN, "api_url": telegram_url},
        "database_url": database_url,
        "amqp_url": AMQP_URL,
        "listen": f"127.0.0.1:{free_port()}",
        "amqp": {"exchange": name, "queue": name},
        "route": {"chats": [chat]},
        # Telegram's limits off, as the benchmarks measure the bridge, not them;
        # a caller measuring a storm turns them on.
        "rate_limits": {"enabled": False},
    }


@asynccontextmanager
async def bridge_process(
    config: dict[str, Any],
    command: str = "serve",
    log_level: str = "info",
    *,
    log_format: str = "text",
    stderr: IO[bytes] | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start `alertbridge COMMAND`, wait until it serves, SIGTERM it afterwards.

    Its log goes to ``stderr`` (a file), or to the test's own stderr.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alertbridge.yml"
        path.write_text(yaml.safe_dump(config))
        arguments = ["-c", str(path), "--log-level", log_level, "--log-format", log_format]
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", command, *arguments],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=stderr,
        )
        try:
            await wait_http(f"http://{config['listen']}/healthz", timeout=30)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@contextmanager
def demo_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port, bridge_port = free_port(), free_port()
    # Nothing of this machine's services may leak in: the demo needs none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "demo", "--port", str(port),
         "--bridge-port", str(bridge_port), *args],
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@asynccontextmanager
async def running_demo() -> AsyncIterator[tuple[subprocess.Popen[str], httpx.AsyncClient]]:
    """The demo, until its samples are delivered: (its process, a client of the sandbox)."""
    with demo_process() as (process, sandbox):
        async with httpx.AsyncClient(base_url=sandbox, timeout=5) as client:

            async def samples_delivered() -> bool:
                try:
                    chats = (await client.get("/sandbox/state")).json()["chats"]
                except httpx.HTTPError:
                    return False
                return sum(len(c["messages"]) for c in chats) >= 5

            await wait_until(samples_delivered, timeout=60, interval=0.3)
            yield process, client
