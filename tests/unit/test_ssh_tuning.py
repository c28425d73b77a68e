"""ssh_tuning/ against the installed asyncssh, over a real loopback SSH connection.

These tests fail loudly when asyncssh changes under the tuning: a new release outside the tested range,
an internal it relies on renamed, or a tuned connection that stops talking SSH correctly (wrong GCM
counters, lost packets, keys not followed across a rekey, a disconnect reason held back)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE

import ssh_tuning
from relay.protocol import SSH_ENCRYPTION_ALGS


@pytest.fixture(autouse=True)
def _tuning_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests are about the tuning itself, also when a whole run has it switched off.
    monkeypatch.setenv(ssh_tuning.ENV_SWITCH, "on")


class _Echo(asyncssh.SSHServerSession[bytes]):
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if data == b"bye":
            # Data, then at once a disconnect: both must reach the client, in that order.
            self.chan.write(b"last words")
            self.chan.get_connection().disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "tuned goodbye")
            return
        self.chan.write(data)


class _Server(asyncssh.SSHServer):
    conns: ClassVar[list[asyncssh.SSHServerConnection]] = []
    tuned: ClassVar[list[bool]] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        _Server.conns.append(conn)
        _Server.tuned.append(ssh_tuning.tune_connection(conn))

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Echo()


class _Client(asyncssh.SSHClient):
    lost: ClassVar[list[Exception | None]] = []

    def connection_lost(self, exc: Exception | None) -> None:
        _Client.lost.append(exc)


@asynccontextmanager
async def _pair(**client_options: Any) -> AsyncIterator[tuple[asyncssh.SSHClientConnection, Any]]:
    _Server.conns.clear()
    _Server.tuned.clear()
    _Client.lost.clear()
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        _Server,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        encryption_algs=list(SSH_ENCRYPTION_ALGS),
        encoding=None,
        keepalive_interval=0.2,
        keepalive_count_max=2,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            known_hosts=None,
            username="u",
            encryption_algs=["aes128-gcm@openssh.com"],
            client_factory=_Client,
            **client_options,
        ) as client:
            yield client, _Server.conns[0]
    finally:
        server.close()
        await server.wait_closed()


def test_asyncssh_is_a_tested_release() -> None:
    major_minor = ".".join(asyncssh.__version__.split(".")[:2])
    assert major_minor in ssh_tuning.TESTED_VERSIONS, (
        f"asyncssh {asyncssh.__version__} is not one ssh_tuning/ was tested with: read its "
        "internals again, then extend TESTED_VERSIONS and the pin in pyproject.toml"
    )


async def test_every_internal_is_there_and_the_connection_is_tuned() -> None:
    async with _pair() as (_, conn):
        assert ssh_tuning.missing_internals(conn) == []
        assert _Server.tuned == [True]


async def test_many_packets_round_trip_with_no_ignore_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    ignored: list[int] = []
    original = SSHConnection._packet_handlers[MSG_IGNORE]

    def count_ignore(self: Any, pkttype: int, pktid: int, packet: Any) -> None:
        if isinstance(self, asyncssh.SSHClientConnection):  # what the tuned server sent
            ignored.append(pktid)
        original(self, pkttype, pktid, packet)

    monkeypatch.setitem(SSHConnection._packet_handlers, MSG_IGNORE, count_ignore)
    async with _pair() as (client, conn):
        writer, reader, _ = await client.open_session(encoding=None)
        before = len(ignored)
        for i in range(500):  # every one checks the GCM counters of both directions
            payload = i.to_bytes(4, "big") * 100
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
        assert len(ignored) == before, "the tuned server still sends an IGNORE packet per data packet"
        assert type(conn._send_encryption._cipher).__name__ == "_KeptGCM"
        assert type(conn._recv_encryption._cipher).__name__ == "_KeptGCM"
        # Busy keys keep their AESGCM object; an idle connection's never got one (its memory).
        assert conn._send_encryption._cipher._aead is not None
        async with _pair() as (_, idle):
            assert idle._send_encryption._cipher._aead is None


async def test_new_keys_after_a_rekey_are_followed() -> None:
    async with _pair(rekey_bytes=64 * 1024) as (client, conn):
        writer, reader, _ = await client.open_session(encoding=None)
        ciphers: list[object] = []  # kept alive, so no two of them can share an id
        for i in range(200):
            payload = bytes([i % 256]) * 4000
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            cipher = conn._send_encryption._cipher
            if not any(cipher is seen for seen in ciphers):
                ciphers.append(cipher)
        assert len(ciphers) > 3, "no rekey happened: the test proves nothing"
        assert type(conn._send_encryption._cipher).__name__ == "_KeptGCM"


async def test_a_disconnect_right_after_data_is_not_held_back() -> None:
    async with _pair() as (client, _):
        writer, reader, _ = await client.open_session(encoding=None)
        writer.write(b"bye")
        assert await reader.readexactly(len(b"last words")) == b"last words"
        await asyncio.wait_for(client.wait_closed(), 5)
        assert len(_Client.lost) == 1 and "tuned goodbye" in str(_Client.lost[0])


async def test_keepalives_keep_flowing_on_an_idle_and_a_busy_tuned_connection() -> None:
    async with _pair() as (client, conn):
        await asyncio.sleep(1.0)  # five keepalive intervals: answered, so the connection stays
        writer, reader, _ = await client.open_session(encoding=None)
        for _ in range(50):
            writer.write(b"x" * 100)
            await reader.readexactly(100)
            await asyncio.sleep(0.02)
        assert not conn.is_closed()
        assert conn._keepalive_timer is not None


async def test_switched_off_it_leaves_connections_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ssh_tuning.ENV_SWITCH, "off")
    async with _pair() as (client, conn):
        assert _Server.tuned == [False]
        assert type(conn) is asyncssh.SSHServerConnection and not hasattr(conn, "_relay_tuning")
        writer, reader, _ = await client.open_session(encoding=None)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
