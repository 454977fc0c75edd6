"""Servers bind port 0 and say which port they got: nothing guesses a free port.

A port picked free and bound later can be taken in between by another
process (it happened: "address already in use" in a test that started an
Alertmanager and a bridge on two such ports).
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from bridge.sandbox.botapi import TelegramDouble
from tests.conftest import REPO, TOKEN, refusing_port
from tests.processes import start_bridge_process
from tests.tcp_proxy import TcpProxy


def standalone(tmp_path: Path, telegram_url: str, listen: str) -> Path:
    path = tmp_path / "alertbridge.yml"
    data = {
        "telegram": {"token": TOKEN, "api_url": telegram_url},
        "sqlite_path": str(tmp_path / "alertbridge.db"),
        "listen": listen,
        "route": {"chats": [-1001]},
    }
    path.write_text(yaml.safe_dump(data))
    return path


async def test_serve_on_port_0_says_where_it_serves(
    telegram: TelegramDouble, tmp_path: Path
) -> None:
    # Whatever the log level: the address is the one line on standard output.
    served = await start_bridge_process(
        standalone(tmp_path, telegram.url, "127.0.0.1:0"), log_level="error"
    )
    try:
        host, port = served.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert (await client.get("/healthz")).status_code == 200
    finally:
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=30)
    assert served.output.text() == f"listening on {served.address}\n"


async def test_a_port_in_use_is_a_clear_error(telegram: TelegramDouble, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = standalone(tmp_path, telegram.url, f"127.0.0.1:{port}")
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", "serve", "-c", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def _connect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def _bind_as_a_server_would(port: int) -> None:
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        intruder.bind(("127.0.0.1", port))


async def test_a_cut_proxy_refuses_and_keeps_its_port() -> None:
    upstream = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    proxy = TcpProxy("127.0.0.1", upstream.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        await asyncio.to_thread(_connect, proxy.port)
        await proxy.cut()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(_connect, proxy.port)
        with pytest.raises(OSError) as taken:
            _bind_as_a_server_would(proxy.port)
        assert taken.value.errno == errno.EADDRINUSE
        await proxy.restore()
        await asyncio.to_thread(_connect, proxy.port)
    finally:
        await proxy.stop()
        upstream.close()


def test_a_refusing_port_refuses_and_is_not_free() -> None:
    with refusing_port() as port:
        with pytest.raises(ConnectionRefusedError):
            _connect(port)
        with pytest.raises(OSError) as taken:
            _bind_as_a_server_would(port)
        assert taken.value.errno == errno.EADDRINUSE
