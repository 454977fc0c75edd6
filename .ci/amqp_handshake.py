"""Does a broker complete the start of an AMQP 0-9-1 handshake? An open port is
not enough: a RabbitMQ wedged by its own state (hundreds of leftover quorum
queues, once) accepts TCP connections and never answers on them.

    python .ci/amqp_handshake.py [HOST] [PORT] [--timeout SECONDS]

Sends the protocol header and waits for the broker's first frame, which must be
Connection.Start (a method frame on channel 0, class 10, method 10). Exit 0 when
it comes, 1 otherwise, with the reason on stderr. Standard library only: .ci/setup
runs it with whatever Python is there.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
METHOD_FRAME = 1
FRAME_END = 0xCE
CONNECTION_START = (10, 10)  # class connection, method start


def _read(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def handshake_problem(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` answers the AMQP header with Connection.Start within
    ``timeout`` seconds; otherwise what went wrong."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(PROTOCOL_HEADER)
            head = _read(sock, 7, deadline)
            if head.startswith(b"AMQP"):
                # The broker's own header instead: it speaks another protocol version.
                rest = _read(sock, 1, deadline)
                return f"the broker refused AMQP 0-9-1 and offered {(head + rest)!r}"
            kind, channel, size = struct.unpack(">BHI", head)
            if kind != METHOD_FRAME or channel != 0 or size < 4:
                return f"not a method frame on channel 0 (type {kind}, channel {channel})"
            payload = _read(sock, size + 1, deadline)
            if payload[-1] != FRAME_END:
                return "a frame without its frame-end octet"
            if struct.unpack(">HH", payload[:4]) != CONNECTION_START:
                return f"the first frame is not Connection.Start: {payload[:4]!r}"
            return None
    except TimeoutError:
        return f"no Connection.Start within {timeout:g}s"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=5672)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    problem = handshake_problem(args.host, args.port, args.timeout)
    if problem is not None:
        print(f"AMQP handshake with {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
