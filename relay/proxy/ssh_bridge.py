"""SSH over WebSocket (DESIGN §3.8): the relay host's ``GET /_relay/ssh`` upgrade becomes one SSH
connection into the relay's own SSH server, for networks that allow only 443.

The visitor's binary messages go straight into an SSH server connection of the relay's own server
(same authentication, same pre-auth caps, counted against the visitor's real address), whose
transport writes back binary messages: no socket pair, no extra copy or syscall per chunk. No visitor
credential is read: SSH authenticates inside. relay.proxy never imports relay.ssh: the service
injects ``open_ssh``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import websocket as ws
from ..http1 import RequestHead, ResponseHead, get_one, serialise_response
from ..limits import Limits
from .forward import Outcome
from .reply import Reply

if TYPE_CHECKING:
    from .visitor import Visitor

#: Starts one SSH server connection on a transport (its peername: the client's address) and
#: returns the connection's protocol, which the bridge feeds with what the client sends.
OpenSsh = Callable[[asyncio.Transport], asyncio.Protocol]
_CHUNK = 256 * 1024  # reads of the visitor: most frames (clients send up to 128 KiB) end within one
#: What may wait unsent to a visitor before its connection is cut: SSH's own windows bound it long
#: before this in practice (a visitor that stops reading also stops answering keepalives).
_MAX_UNSENT = 16 * 1024 * 1024


class FrameTransport(asyncio.Transport):
    """The SSH server's transport: what it writes goes to the visitor as binary messages (one per
    write; the relay's SSH tuning writes a loop pass's packets at once), and closing it closes the
    WebSocket."""

    def __init__(self, visitor: Visitor, client: str) -> None:
        super().__init__()
        self.visitor = visitor
        self.client = client
        self.sent = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed or not data:
            return
        self.send_frame(ws.frame(ws.Opcode.BINARY, bytes(data)))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def send_frame(self, frame: bytes) -> None:
        writer = self.visitor.writer
        if writer.transport.is_closing():
            self.abort()
            return
        writer.write(frame)
        self.sent += len(frame)
        if writer.transport.get_write_buffer_size() > _MAX_UNSENT:
            self.abort()

    def close(self) -> None:
        """The SSH server is done: a close frame, then the visitor's connection closes."""
        if not self.closed:
            self.send_frame(ws.close_frame(ws.Close.NORMAL))
            self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.visitor.writer.close()  # wakes the bridge's read of the visitor

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.visitor.writer.transport.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.client, 0)  # the unit of the SSH server's pre-auth caps and lockout
        if name == "sockname":
            return self.visitor.writer.get_extra_info("sockname", default)
        return default


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
        visitor.send(serialise_response(accept, headers))
        visitor.bridged = True  # not a request in flight: shutdown closes it through SSH, not here
        transport = FrameTransport(visitor, client)
        protocol = self.open_ssh(transport)
        error: Exception | None = None
        try:
            await self._up(visitor, transport, protocol)
        except (ConnectionError, OSError) as exc:
            error = exc
        finally:
            if not transport.closed:
                protocol.connection_lost(error)  # the SSH server lets go and aborts its transport
                transport.abort()
        return Outcome(101, transport.sent, False)

    async def _up(self, visitor: Visitor, transport: FrameTransport, protocol: asyncio.Protocol) -> None:
        """The visitor's frames into the SSH server, until a close, EOF or a broken frame."""
        parser = ws.FrameParser(self.limits.wss_max_frame_bytes)
        reader = visitor.reader
        while not transport.closed:
            data = await reader.read(_CHUNK)
            if not data:
                return
            try:
                frames = parser.feed(data)
            except ws.FrameError as exc:
                transport.send_frame(ws.close_frame(exc.code, str(exc)))
                return
            for f in frames:
                if transport.closed:
                    return
                if f.opcode is ws.Opcode.BINARY:
                    protocol.data_received(bytes(f.payload))
                elif f.opcode is ws.Opcode.PING:
                    transport.send_frame(ws.frame(ws.Opcode.PONG, f.payload))
                elif f.opcode is ws.Opcode.CLOSE:
                    transport.close()
                    return
