"""SSH connections that do not arrive on a socket (SSH over WebSocket, /_relay/ssh): asyncssh serves
them through its tunnel interface, so the relay's own SSH server, options, caps and limits apply
unchanged, and the bytes go straight from the WebSocket frames into asyncssh's protocol (no socket
pair, no extra syscalls or copies per chunk).

asyncssh's ``listen(tunnel=...)`` calls ``tunnel.create_server(factory, host, port)`` and expects
``factory()`` to make the connection's protocol; that contract is asyncssh's, not a documented API
for objects other than its own connections, so it is used only here, and
``tests/unit/test_stream_server.py`` fails loudly when asyncssh changes it (tested with 2.21–2.24).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncssh

#: asyncssh's factory: (original host, port) -> the protocol of a new connection.
Factory = Callable[[str, int], Any]


class StreamListener:
    """What asyncssh listens "through": it hands over its connection factory, and nothing else."""

    def __init__(self) -> None:
        self.factory: Factory | None = None
        self.closed = False

    async def create_server(
        self, session_factory: Factory, listen_host: str, listen_port: int
    ) -> StreamListener:
        self.factory = session_factory
        return self

    def accept(self, transport: asyncio.Transport) -> asyncio.Protocol:
        """A new SSH server connection on ``transport`` (its peername is the client's address)."""
        if self.factory is None or self.closed:
            raise ConnectionRefusedError("the SSH server is not listening")
        protocol: asyncio.Protocol = self.factory("", 0)
        protocol.connection_made(transport)
        return protocol

    # What asyncssh's SSHAcceptor asks of the "server" it wraps.
    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    def get_addresses(self) -> list[tuple[str, int]]:
        return []

    def get_port(self) -> int:
        return 0


async def listen(
    options: dict[str, object], server_factory: Callable[[], asyncssh.SSHServer]
) -> StreamListener:
    listener = StreamListener()
    await asyncssh.listen(tunnel=listener, server_factory=server_factory, **options)
    if listener.factory is None:
        raise RuntimeError("asyncssh.listen(tunnel=...) did not hand over its connection factory")
    return listener
