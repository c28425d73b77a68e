"""SSH over WebSocket (DESIGN §3.8): the relay host's ``GET /_relay/ssh`` upgrade becomes one SSH
connection into the relay's own SSH server, for networks that allow only 443.

The visitor's binary messages are written to one end of a socket pair whose other end the SSH side
serves like an accepted TCP connection (same authentication, same pre-auth caps, counted against the
visitor's real address); what the SSH server sends comes back as binary messages. No visitor
credential is read: SSH authenticates inside. relay.proxy never imports relay.ssh: the service
injects ``open_ssh``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import websocket as ws
from ..http1 import RequestHead, ResponseHead, get_one, serialise_response
from ..limits import Limits
from .forward import Outcome
from .reply import Reply

if TYPE_CHECKING:
    from .visitor import Visitor

#: Hands one end of a connected socket pair to the SSH server, with the client's address.
OpenSsh = Callable[[socket.socket, str], None]
_CHUNK = 256 * 1024  # reads of the visitor: most frames (64 KiB from clients) end within one


class SshBridge:
    def __init__(self, open_ssh: OpenSsh, limits: Limits) -> None:
        self.open_ssh = open_ssh
        self.limits = limits

    def refusal(self, head: RequestHead) -> Reply | None:
        """The answer to a request that cannot become the SSH WebSocket (None: it can)."""
        why = ws.handshake_refusal(
            method=head.method,
            upgrade=get_one(head.headers, "upgrade") if head.is_upgrade else None,
            version=get_one(head.headers, "sec-websocket-version"),
            key=get_one(head.headers, "sec-websocket-key"),
        )
        if why is None:
            return None
        return Reply.error(
            400 if head.is_upgrade else 426, why, html=False, headers=[("Upgrade", "websocket")]
        )

    async def serve(self, visitor: Visitor, head: RequestHead, client: str) -> Outcome:
        key = get_one(head.headers, "sec-websocket-key") or ""
        accept = ResponseHead((1, 1), 101, "Switching Protocols", [])
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ws.accept_value(key)),
        ]
        mine, theirs = socket.socketpair()
        try:
            self.open_ssh(theirs, client)
        except BaseException:
            theirs.close()
            mine.close()
            raise
        visitor.send(serialise_response(accept, headers))
        visitor.bridged = True  # not a request in flight: shutdown closes it through SSH, not here
        reader, writer = await asyncio.open_connection(sock=mine, limit=_CHUNK)
        sent = _Counter()
        up = asyncio.ensure_future(self._up(visitor, writer, sent))
        down = asyncio.ensure_future(self._down(visitor, reader, sent))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await asyncio.gather(up, down)
            writer.close()
        return Outcome(101, sent.n, False)

    async def _up(self, visitor: Visitor, ssh: asyncio.StreamWriter, sent: _Counter) -> None:
        """The visitor's frames into the SSH server, until a close, EOF or a broken frame."""
        parser = ws.FrameParser(self.limits.wss_max_frame_bytes)
        while True:
            data = await visitor.reader.read(_CHUNK)
            if not data:
                return
            try:
                frames = parser.feed(data)
            except ws.FrameError as exc:
                self._send(visitor, ws.close_frame(exc.code, str(exc)), sent)
                return
            for f in frames:
                if f.opcode is ws.Opcode.BINARY:
                    ssh.write(f.payload)
                elif f.opcode is ws.Opcode.PING:
                    self._send(visitor, ws.frame(ws.Opcode.PONG, f.payload), sent)
                elif f.opcode is ws.Opcode.CLOSE:
                    self._send(visitor, ws.close_frame(ws.Close.NORMAL), sent)
                    return
            await ssh.drain()  # backpressure: the SSH server reads at its own pace

    async def _down(self, visitor: Visitor, ssh: asyncio.StreamReader, sent: _Counter) -> None:
        """What the SSH server sends, as binary messages, until it closes."""
        idle = self.limits.stream_idle_timeout
        while True:
            data = await ssh.read(_CHUNK)
            if not data:
                self._send(visitor, ws.close_frame(ws.Close.NORMAL), sent)
                await visitor.drained(idle)
                return
            self._send(visitor, ws.frame(ws.Opcode.BINARY, data), sent)
            await visitor.drained(idle)

    @staticmethod
    def _send(visitor: Visitor, data: bytes, sent: _Counter) -> None:
        visitor.send(data)
        sent.n += len(data)


class _Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0
