"""SSH over WebSocket, the client side (DESIGN §3.8): for networks that allow only 443.

``relay-client proxy wss://HOST/_relay/ssh`` is a ProxyCommand for stock OpenSSH (ssh, scp, sftp,
``ssh -J``): stdin and stdout carry the SSH byte stream, binary messages carry it to the relay. It is
Python only (stdin and stdout are read and written by threads), so it runs on Windows too. The same
pump serves ``relay-client connect --transport wss``, through one end of a socket pair handed to
asyncssh as its connected socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import BinaryIO
from urllib.parse import urlsplit

import aiohttp

from .config import ClientError

SSH_WS_PATH = "/_relay/ssh"
#: Bytes per binary message: fewer, bigger frames cost both ends less (the relay takes up to 256 KiB).
_CHUNK = 128 * 1024
#: Seconds to open the WebSocket (TCP, TLS and the upgrade).
OPEN_TIMEOUT = 20.0


def wss_url(value: str) -> str:
    """``wss://HOST[:PORT][/_relay/ssh]`` (``ws://`` for a relay without TLS, e.g. on loopback)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise ClientError(f"invalid WebSocket URL {value!r}: expected wss://HOST[:PORT]{SSH_WS_PATH}")
    if parts.path not in ("", "/", SSH_WS_PATH) or parts.query or parts.fragment or parts.username:
        raise ClientError(f"invalid WebSocket URL {value!r}: the relay's path is {SSH_WS_PATH}")
    return f"{parts.scheme}://{parts.netloc}{SSH_WS_PATH}"


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


class SocketBridge:
    """One end of a socket pair for asyncssh; the other end pumped over the WebSocket."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self.session = session
        self.ws = ws
        self.ssh_end, self._mine = socket.socketpair()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> socket.socket:
        self.task = asyncio.ensure_future(self._run())
        return self.ssh_end

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection(sock=self._mine, limit=_CHUNK)

        async def read() -> bytes:
            return await reader.read(_CHUNK)

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await pump(self.ws, read, write)
        finally:
            writer.close()
            await self.session.close()


async def bridge(url: str) -> SocketBridge:
    session, ws = await open_websocket(url)
    return SocketBridge(session, ws)
