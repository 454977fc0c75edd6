""".ci/amqp_handshake.py, which .ci/setup trusts to tell a working RabbitMQ from a
wedged one, against fake brokers (never the shared one: a failed check restarts it)."""

from __future__ import annotations

import importlib.util
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import refusing_port

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "amqp_handshake.py"
spec = importlib.util.spec_from_file_location("amqp_handshake", SCRIPT)
assert spec is not None and spec.loader is not None
amqp_handshake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(amqp_handshake)


def frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


CONNECTION_START = frame(1, 0, struct.pack(">HHBB", 10, 10, 0, 9) + b"\x00" * 8)


@contextmanager
def fake_broker(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on a port the system picks that reads the header, then ``answer``s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            header = connection.recv(8)
            assert header == b"AMQP\x00\x00\x09\x01"
            answer(connection)
            stop.wait(10)  # hold the connection open until the check is done

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()


def test_connection_start_is_a_working_broker() -> None:
    with fake_broker(lambda c: c.sendall(CONNECTION_START)) as port:
        assert amqp_handshake.handshake_problem("127.0.0.1", port, 5) is None


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        (b"", "no Connection.Start within 0.5s"),  # the wedged broker: accepts, says nothing
        (b"AMQP\x00\x00\x09\x00", "refused AMQP 0-9-1"),
        (frame(1, 0, struct.pack(">HH", 10, 50)), "not Connection.Start"),
        (frame(1, 0, struct.pack(">HH", 10, 10), end=0), "frame-end"),
        (frame(8, 0, b""), "not a method frame"),
    ],
)
def test_anything_else_is_a_problem(sent: bytes, problem: str) -> None:
    with fake_broker(lambda c: c.sendall(sent)) as port:
        found = amqp_handshake.handshake_problem("127.0.0.1", port, 0.5)
    assert found is not None and problem in found


def test_a_broker_that_hangs_up_is_a_problem() -> None:
    with fake_broker(lambda c: c.shutdown(socket.SHUT_RDWR)) as port:
        found = amqp_handshake.handshake_problem("127.0.0.1", port, 5)
    assert found is not None and "closed" in found


def test_nothing_listening_fails_the_script_with_its_reason() -> None:
    with refusing_port() as port:
        run = subprocess.run(
            [sys.executable, str(SCRIPT), "127.0.0.1", str(port), "--timeout", "1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 1 and "ConnectionRefusedError" in run.stderr
