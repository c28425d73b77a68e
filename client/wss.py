"""SSH over WebSocket, the client side (DESIGN §3.8): for networks that allow only 443.

``relay-client proxy wss://HOST/_relay/ssh`` is a ProxyCommand for stock OpenSSH (ssh, scp, sftp,
``ssh -J``): stdin and stdout carry the SSH byte stream, binary messages carry it to the relay. It is
Python only (stdin and stdout are read and written by threads), so it runs on Windows too.

``relay-client connect --transport wss`` runs asyncssh straight over the WebSocket: asyncssh's
``connect(tunnel=...)`` calls ``create_connection(factory, host, port)`` on any object and runs the
protocol ``factory()`` makes on the transport it gets back (:class:`WebSocketTunnel`), which saves a
socket pair's copies and syscalls per chunk (with the relay's side, bulk over wss went from 0.74× to
0.86× of SSH; docs/performance.md).
That contract is asyncssh's own, used only here; the e2e tests of SSH over WebSocket run through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, BinaryIO

import aiohttp

from .config import SSH_WS_PATH, ClientError, wss_url

__all__ = ["SSH_WS_PATH", "WebSocketTunnel", "proxy_stdio", "wss_url"]

#: Bytes per binary message: fewer, bigger frames cost both ends less (the relay takes up to 256 KiB).
_CHUNK = 128 * 1024
#: Seconds to open the WebSocket (TCP, TLS and the upgrade).
OPEN_TIMEOUT = 20.0


async def open_websocket(url: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse[bool]]:
    """The relay's SSH WebSocket; ClientError says why it could not be opened."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=OPEN_TIMEOUT))
    try:
        ws = await session.ws_connect(url, autoping=True, heartbeat=None, max_msg_size=0, compress=0)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        await session.close()
        raise ClientError(f"cannot open {url}: {exc or type(exc).__name__}") from None
    return session, ws


async def pump(
    ws: aiohttp.ClientWebSocketResponse[bool],
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], Awaitable[None]],
) -> None:
    """Move bytes both ways until either side ends: ``read()`` → binary messages, messages →
    ``write``. Returns when the stream or the WebSocket closes."""

    async def up() -> None:
        while data := await read():
            await ws.send_bytes(data)

    async def down() -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                await write(message.data)
            elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                return

    tasks = {asyncio.ensure_future(up()), asyncio.ensure_future(down())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError, ConnectionError):
            await asyncio.gather(*tasks)
        await ws.close()


async def proxy_stdio(url: str, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """The ProxyCommand: this process's stdin and stdout are the SSH connection."""
    src = stdin or sys.stdin.buffer
    dst = stdout or sys.stdout.buffer
    loop = asyncio.get_running_loop()
    session, ws = await open_websocket(url)

    async def read() -> bytes:
        return await loop.run_in_executor(None, _read1, src)

    async def write(data: bytes) -> None:
        await loop.run_in_executor(None, _write, dst, data)

    try:
        await pump(ws, read, write)
    finally:
        await session.close()


def _read1(src: BinaryIO) -> bytes:
    read1 = getattr(src, "read1", None)
    return bytes(read1(_CHUNK) if read1 is not None else src.read(1))


def _write(dst: BinaryIO, data: bytes) -> None:
    dst.write(data)
    dst.flush()


class WebSocketTransport(asyncio.Transport):
    """An asyncio transport over the WebSocket, for asyncssh's connection protocol: what asyncssh
    writes in one event-loop pass leaves as one binary message (asyncssh writes packet by packet),
    and each message received is handed to the protocol as it comes. No socket pair, no extra copy."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool], session: aiohttp.ClientSession) -> None:
        super().__init__()
        self._ws = ws
        self._session = session
        self._protocol: asyncio.Protocol | None = None
        self._out: list[bytes] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)
        self._tasks = [asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._send())]

    # -- what asyncssh calls ---------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._out.append(bytes(data))
        self._size += len(data)
        self._wake.set()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        return self._size

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._wake.set()  # the sender sends what is queued, then closes

    def abort(self) -> None:
        self._closing = True
        self._out.clear()
        self._wake.set()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("", 0), "sockname": ("", 0)}.get(name, default)

    # -- the two directions ----------------------------------------------------------------------

    async def _send(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    data = b"".join(self._out)
                    self._out.clear()
                    self._size = 0
                    for at in range(0, len(data), _CHUNK):
                        await self._ws.send_bytes(data[at : at + _CHUNK])
                if self._closing:
                    return
        except (aiohttp.ClientError, OSError, ConnectionError):
            return
        finally:
            with contextlib.suppress(aiohttp.ClientError, OSError, ConnectionError, RuntimeError):
                await self._ws.close()  # the receiving side may have closed the session already

    async def _receive(self) -> None:
        exc: Exception | None = None
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    break
                await self._reading.wait()
                assert self._protocol is not None
                self._protocol.data_received(message.data)
        except (aiohttp.ClientError, OSError, ConnectionError) as err:
            exc = err
        finally:
            self._closing = True
            self._wake.set()
            if self._protocol is not None:
                self._protocol.connection_lost(exc)
            await self._session.close()


class WebSocketTunnel:
    """What asyncssh.connect(tunnel=...) opens its connection through: the relay's SSH WebSocket."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def create_connection(
        self, session_factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        session, ws = await open_websocket(self.url)
        transport = WebSocketTransport(ws, session)
        protocol = session_factory()
        transport.start(protocol)
        return transport, protocol
