"""`alertbridge` as a real subprocess, for the demo and the benchmarks.

Every server a test starts binds port 0 and says which port it got; the test
reads that from the process's output. Nothing picks a "free" port to bind
later, which another process may take in between.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests.conftest import REPO, wait_until

#: What `alertbridge serve|receiver|worker` prints on standard output once it serves.
BRIDGE_LISTENING = re.compile(rb"^listening on (\S+)$")
#: What the demo prints once its sandbox serves.
DEMO_PAGE = re.compile(rb"chat page: (http://\S+?)/?\s")


class Output:
    """A child's output, read line by line in a thread (so the pipe never
    fills), copied to ``sink`` and kept; ``address`` resolves with the first
    match of ``pattern``, or fails if the output ends without one."""

    def __init__(
        self, stream: IO[bytes], pattern: re.Pattern[bytes], sink: IO[bytes] | None = None
    ) -> None:
        self.lines: list[bytes] = []
        self._found: Future[str] = Future()
        self._thread = threading.Thread(target=self._pump, args=(stream, pattern, sink))
        self._thread.daemon = True
        self._thread.start()

    def _pump(self, stream: IO[bytes], pattern: re.Pattern[bytes], sink: IO[bytes] | None) -> None:
        for line in iter(stream.readline, b""):
            self.lines.append(line)
            if sink is not None:
                sink.write(line)
                sink.flush()
            if not self._found.done() and (match := pattern.search(line)):
                self._found.set_result(match.group(1).decode())
        if not self._found.done():
            text = b"".join(self.lines).decode(errors="replace")
            self._found.set_exception(RuntimeError(f"it ended without saying where:\n{text}"))

    async def address(self, timeout: float = 60) -> str:
        return await asyncio.wait_for(asyncio.wrap_future(self._found), timeout)

    def text(self) -> str:
        """All of it, once the child has ended."""
        self._thread.join()
        return b"".join(self.lines).decode(errors="replace")


@dataclass
class Served:
    """A process serving HTTP, and where."""

    process: subprocess.Popen[bytes]
    address: str
    output: Output = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def spawn_bridge(
    config_path: Path,
    command: str = "serve",
    *,
    log_level: str = "info",
    log_format: str = "text",
    env: dict[str, str] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    """`alertbridge COMMAND` from this checkout, not waited for."""
    arguments = ["-c", str(config_path), "--log-level", log_level, "--log-format", log_format]
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", command, *arguments],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=stdout,
        stderr=stderr,
    )


async def start_bridge_process(
    config_path: Path,
    command: str = "serve",
    *,
    log_level: str = "info",
    log_format: str = "text",
    env: dict[str, str] | None = None,
    stderr: IO[bytes] | None = None,
) -> Served:
    """`alertbridge COMMAND`, once it serves. Its log goes to ``stderr`` (a file),
    or to the test's own stderr."""
    process = spawn_bridge(
        config_path,
        command,
        log_level=log_level,
        log_format=log_format,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    assert process.stdout is not None
    output = Output(process.stdout, BRIDGE_LISTENING)
    try:
        return Served(process, await output.address(), output)
    except BaseException:
        process.kill()
        process.wait()
        raise


@asynccontextmanager
async def bridge_process(
    config: dict[str, Any],
    command: str = "serve",
    log_level: str = "info",
    *,
    log_format: str = "text",
    stderr: IO[bytes] | None = None,
) -> AsyncIterator[Served]:
    """Start `alertbridge COMMAND`, wait until it serves, SIGTERM it afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alertbridge.yml"
        path.write_text(yaml.safe_dump(config))
        served = await start_bridge_process(
            path, command, log_level=log_level, log_format=log_format, stderr=stderr
        )
        try:
            yield served
        finally:
            served.process.send_signal(signal.SIGTERM)
            served.process.wait(timeout=30)


@contextmanager
def demo_process(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], Output]]:
    """`alertbridge demo` on ports the system picks; its output, whose
    ``address()`` is the sandbox's URL once it serves."""
    # Nothing of this machine's services may leak in: the demo needs none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "demo", "--port", "0", "--bridge-port", "0", *args],
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        yield process, Output(process.stdout, DEMO_PAGE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@asynccontextmanager
async def running_demo() -> AsyncIterator[tuple[subprocess.Popen[bytes], httpx.AsyncClient]]:
    """The demo, until its samples are delivered: (its process, a client of the sandbox)."""
    with demo_process() as (process, output):
        sandbox = await output.address()
        async with httpx.AsyncClient(base_url=sandbox, timeout=5) as client:

            async def samples_delivered() -> bool:
                chats = (await client.get("/sandbox/state")).json()["chats"]
                return sum(len(c["messages"]) for c in chats) >= 5

            await wait_until(samples_delivered, timeout=60, interval=0.3)
            yield process, client
