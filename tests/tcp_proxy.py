"""A TCP proxy on 127.0.0.1 that a test can cut: a network partition on demand.

It listens on a port the system picks (port 0) and keeps that port for its
whole life: while cut, a bound socket that does not listen holds it, so
connections are refused and no other process can take the port in between.
Both sockets set SO_REUSEPORT, which lets the listening one come back beside
the holder before the holder lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._holder: socket.socket | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose_answers = 0
        self.port = 0

    async def start(self) -> None:
        await self._listen()
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True, reuse_port=True
        )

    def _hold(self) -> None:
        # SO_REUSEPORT alone: the listening socket can come back beside it, but a
        # server binding with SO_REUSEADDR (most do) is refused the port.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", self.port))
        self._holder = holder

    def _release(self) -> None:
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        back = self._pipe
        if self._lose_answers > 0:
            self._lose_answers -= 1
            back = self._drop_on_answer
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(back(up_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    def lose_answers(self, n: int) -> None:
        """The next ``n`` connections carry the request to the target, but once its
        answer starts the client's connection is reset and the answer never
        arrives: the request was served, and the client cannot know it."""
        self._lose_answers += n

    @staticmethod
    async def _drop_on_answer(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await src.read(1)
        dst.transport.abort()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones; the port stays ours."""
        if self._server is not None:
            if self._holder is None:
                self._hold()
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            await self._listen()
        self._release()

    async def stop(self) -> None:
        await self.cut()
        self._release()
