"""A fault-injecting TCP proxy on loopback: clients connect to it instead of a server.

Modes, switched at any moment from another thread:
- `pass`: bytes flow both ways;
- `reset`: every open connection is closed with a TCP reset and new ones are reset on accept
  (a server that went away: clients see "connection refused/reset" at once);
- `blackhole`: connections stay open and new ones are accepted, but nothing is forwarded in
  either direction (a network partition: clients see only time-outs). Back in `pass`, the
  connections held open during the black hole are reset, as a real partition's long-dead TCP
  sessions would be.

It runs an asyncio loop in a daemon thread; `close()` stops it. Only loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["pass", "reset", "blackhole"]
CHUNK = 65536


class FaultProxy:
    def __init__(self, upstream_port: int, listen_port: int = 0, name: str = "proxy") -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.name = name
        self._mode: Mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"fault-{name}", daemon=True)
        self._listen_port = listen_port
        self.port = 0
        self.connections = 0  # accepted since start

    # -- control (any thread) -------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name}: the proxy did not start")
        return self

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch modes; entering `reset`, or leaving `blackhole`, resets every connection."""
        previous, self._mode = self._mode, mode
        if mode == "reset" or (previous == "blackhole" and mode == "pass"):
            asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)
        log.info("%s: %s -> %s", self.name, previous, mode)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the loop ---------------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()

    async def _reset_all(self) -> None:
        for client, server in list(self._conns):
            _reset(client)
            if server is not None:
                _reset(server)
        self._conns.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._mode == "reset":
            _reset(writer)
            return
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._conns.add(pair)
        try:
            while self._mode == "blackhole":  # hold it open, forward nothing
                if not await reader.read(CHUNK):
                    return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            self._conns.discard(pair)
            return
        self._conns.discard(pair)
        pair = (writer, up_writer)
        self._conns.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._conns.discard(pair)
            for w in pair:
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                with contextlib.suppress(Exception):
                    writer.write_eof()
                return
            while self._mode == "blackhole":  # drop the bytes; the peer hears nothing
                data = await reader.read(CHUNK)
                if not data:
                    return
            if self._mode == "reset":
                return
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN: the peer sees 'connection reset'."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
