"""relay/ssh/stream_server.py leans on asyncssh's tunnel-listener contract (listen(tunnel=...) hands
over a factory of connection protocols). This fails loudly when asyncssh changes it: SSH over
WebSocket would then have no way into the relay's SSH server."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh

from relay.ssh.stream_server import listen


class Captured(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("198.51.100.7", 0) if name == "peername" else default


async def test_asyncssh_hands_over_a_factory_whose_connections_run_on_any_transport() -> None:
    seen: list[tuple[str, int]] = []

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            seen.append(conn.get_extra_info("peername"))

    key = asyncssh.generate_private_key("ssh-ed25519")
    listener = await listen({"server_host_keys": [key], "server_version": "Probe"}, Server)
    transport = Captured()
    protocol = listener.accept(transport)
    await asyncio.sleep(0)
    assert transport.data.startswith(b"SSH-2.0-Probe\r\n"), transport.data  # it speaks first
    assert seen == [("198.51.100.7", 0)]  # the transport's peername is the client's address
    protocol.data_received(b"SSH-2.0-not really\r\n" + b"\x00" * 64)  # garbage after the banner
    await asyncio.sleep(0.05)
    assert transport.closed  # a protocol error closes it, as on a socket
    listener.close()
