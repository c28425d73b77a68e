"""Hostile SSH clients against a real relay with short limits: raw TCP connections that never log in,
an asyncssh client that misbehaves on purpose (guesses passwords and keys, asks for too many forwards,
sessions and connections), and a real OpenSSH client frozen with SIGSTOP (a machine that vanished
without closing its TCP connection). Source addresses differ per test (any 127.x works on Linux
loopback), since admission and failure limits count per address."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator

import asyncssh
import pytest

from .conftest import unique_name
from .harness import (
    Backend,
    RelayProcess,
    connect_from,
    fetch,
    limit_args,
    open_tunnel,
    read_until_closed,
    relay_rss_kib,
    start_relay,
)

LIMITS = {
    "ssh_login_timeout": "2",
    "ssh_max_unauthenticated": "5",
    "ssh_max_unauthenticated_per_address": "3",
    "ssh_max_connections_per_user": "2",
    "ssh_max_forwards_per_connection": "2",
    "ssh_max_sessions_per_connection": "2",
    "ssh_keepalive_interval": "0.5",
    "ssh_keepalive_count": "2",
    "upstream_open_timeout": "2",
    "auth_failure_limit": "3",
    "auth_failure_window": "60",
}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("hostile-ssh")
    workdir.chmod(0o700)
    proc = start_relay(workdir, extra=limit_args(LIMITS))
    yield proc
    proc.stop()


@pytest.fixture
def user(relay: RelayProcess) -> tuple[str, str]:
    name = unique_name("sx")
    return name, relay.add_user(name)


async def login(
    relay: RelayProcess,
    username: str,
    *,
    password: str | None = None,
    key: asyncssh.SSHKey | None = None,
    source: str = "127.0.0.1",
) -> asyncssh.SSHClientConnection:
    """An asyncssh client that does exactly what the test says: no agent, no default keys."""
    return await asyncssh.connect(
        "127.0.0.1",
        relay.ssh_port,
        username=username,
        password=password,
        client_keys=[key] if key is not None else None,
        agent_path=None,
        known_hosts=None,
        local_addr=(source, 0),
        connect_timeout=10,
        preferred_auth="publickey" if key is not None else "password",
    )


async def held_unauthenticated(
    relay: RelayProcess, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection that says hello as SSH and then nothing: it holds a login slot."""
    reader, writer = await connect_from(relay.ssh_port, source)
    writer.write(b"SSH-2.0-Hostile_0.1\r\n")
    await writer.drain()
    return reader, writer


async def refused_at_once(relay: RelayProcess, source: str) -> bool:
    """True if the relay closes a new connection from ``source`` without even sending its banner."""
    reader, writer = await connect_from(relay.ssh_port, source)
    out, closed = await read_until_closed(reader, timeout=5)
    writer.close()
    return closed and not out  # not even a version string or a KEXINIT


async def test_login_timeout_closes_a_silent_client(relay: RelayProcess) -> None:
    reader, writer = await held_unauthenticated(relay, "127.0.0.20")
    out, closed = await read_until_closed(reader, timeout=15)
    writer.close()
    assert out.startswith(b"SSH-2.0-Relay")
    assert closed  # after ssh_login_timeout, not never


async def test_unauthenticated_caps_refuse_early_and_keep_serving_the_rest(
    relay: RelayProcess, user: tuple[str, str]
) -> None:
    held = [await held_unauthenticated(relay, "127.0.0.21") for _ in range(3)]
    assert await refused_at_once(relay, "127.0.0.21")  # per-address cap (3)
    held += [await held_unauthenticated(relay, "127.0.0.22") for _ in range(2)]
    assert await refused_at_once(relay, "127.0.0.23")  # total cap (5)
    # Those admitted are served: each got the relay's banner.
    for reader, _ in held:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"SSH-2.0-Relay")
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.3)
    conn = await login(relay, user[0], password=user[1], source="127.0.0.23")
    conn.close()


async def test_password_guessing_is_limited_per_address_without_locking_the_account(
    relay: RelayProcess, user: tuple[str, str]
) -> None:
    name, token = user
    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            await login(relay, name, password=token[:-4] + "xxxx", source="127.0.0.31")
    # Now even the right token from that address is refused, at connect time.
    with pytest.raises((asyncssh.Error, OSError)):
        await login(relay, name, password=token, source="127.0.0.31")
    assert await refused_at_once(relay, "127.0.0.31")
    conn = await login(relay, name, password=token, source="127.0.0.32")  # the account is not locked
    conn.close()


async def test_unknown_keys_count_once_per_connection(relay: RelayProcess, user: tuple[str, str]) -> None:
    name, token = user
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            await login(relay, name, key=stranger, source="127.0.0.33")
    assert await refused_at_once(relay, "127.0.0.33")
    conn = await login(relay, name, password=token, source="127.0.0.34")
    conn.close()


async def test_forwards_per_connection_are_capped(
    relay: RelayProcess, backend: Backend, user: tuple[str, str]
) -> None:
    name, token = user
    conn = await login(relay, name, password=token, source="127.0.0.41")
    try:
        for suffix in ("a", "b"):
            await conn.forward_remote_port(f"{name}{suffix}", 80, "127.0.0.1", backend.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port(f"{name}c", 80, "127.0.0.1", backend.port)
        reply = await fetch(relay, f"{name}a.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200  # those within the cap work
    finally:
        conn.close()


async def test_thousands_of_refused_forwards_leave_memory_and_log_flat(
    relay: RelayProcess, user: tuple[str, str]
) -> None:
    """Each refused -R quotes the client's bind address in a notice and a log line; the notices, the
    quoted text and the log lines are bounded per connection, so the relay's RSS stays flat."""
    name, token = user
    conn = await login(relay, name, password=token, source="127.0.0.43")
    idle = await conn.create_session(asyncssh.SSHClientSession)  # a session that never reads

    async def refuse(count: int, start: int) -> None:
        for n in range(start, start + count):
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port(f"{n}-" + "x" * 3000, 80, "127.0.0.1", 9)

    try:
        await refuse(500, 0)
        before = relay_rss_kib(relay)
        await refuse(4500, 500)
        grown = relay_rss_kib(relay) - before
        assert grown < 2048, f"RSS grew {grown} KiB over 4500 refused forwards"
        result = await conn.run("tunnels --json", check=True)
        doc = json.loads(str(result.stdout))
        notices = doc["notices"]
        assert notices[0].startswith("(") and "older notices dropped" in notices[0]
        assert 1 < len(notices) <= 33 and all(len(n) < 1024 for n in notices)
        assert "4999-" in notices[-1] and "chars)" in notices[-1]  # the newest, with its text cut
        lines = [ln for ln in relay.log_text().splitlines() if "ssh.forward_refused" in ln and ".43:" in ln]
        assert 20 <= len(lines) < 200 and any("suppressed=" in ln for ln in lines)
        assert all(len(ln) < 2048 for ln in lines)
    finally:
        idle[0].close()
        conn.close()


async def test_sessions_per_connection_are_capped(relay: RelayProcess, user: tuple[str, str]) -> None:
    name, token = user
    conn = await login(relay, name, password=token, source="127.0.0.42")
    try:
        sessions = [await conn.create_session(asyncssh.SSHClientSession) for _ in range(2)]
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession)
        sessions[0][0].close()
        await sessions[0][0].wait_closed()
        await conn.create_session(asyncssh.SSHClientSession)  # a place was freed
    finally:
        conn.close()


async def test_connections_per_user_are_capped(relay: RelayProcess, user: tuple[str, str]) -> None:
    name, token = user
    first = [await login(relay, name, password=token, source="127.0.0.43") for _ in range(2)]
    try:
        try:
            extra = await login(relay, name, password=token, source="127.0.0.43")
        except asyncssh.DisconnectError as exc:
            assert exc.code == asyncssh.DISC_TOO_MANY_CONNECTIONS
        else:
            await asyncio.wait_for(extra.wait_closed(), 10)  # disconnected right after login
        for conn in first:  # the ones within the cap stay up
            result = await conn.run("tunnels --json", check=True)
            assert f'"user": "{name}"' in str(result.stdout)
    finally:
        for conn in first:
            conn.close()


async def test_client_gone_without_closing_tcp_is_marked_down_within_the_keepalive_window(
    relay: RelayProcess, backend: Backend, user: tuple[str, str]
) -> None:
    name, token = user
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    try:
        assert (
            await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        ).status == 200
        os.kill(tunnel.proc.pid, signal.SIGSTOP)  # the TCP connection stays open; nothing answers
        for _ in range(40):  # keepalive 0.5 s × 2: gone in about 1.5 s; give it up to 20 s
            reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
            if reply.status == 502 and b"offline" in reply.body:
                break
            await asyncio.sleep(0.5)
        assert reply.status == 502 and b"offline" in reply.body
    finally:
        os.kill(tunnel.proc.pid, signal.SIGKILL)
        await tunnel.proc.wait()


async def test_everything_else_is_refused_to_a_hostile_client(
    relay: RelayProcess, user: tuple[str, str]
) -> None:
    name, token = user
    conn = await login(relay, name, password=token, source="127.0.0.44")
    try:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", relay.http_port)  # direct-tcpip: never a proxy
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection(f"{name}.localhost", 2222)  # a name with no alias on that port
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("", 0, "127.0.0.1", 1)  # a port of the server's choice
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("www", 80, "127.0.0.1", 1)  # reserved name
        result = await conn.run("cat /etc/passwd")
        assert result.exit_status != 0 and "root:" not in str(result.stdout)
    finally:
        conn.close()


async def test_client_text_in_ssh_logs_is_escaped_and_tokens_redacted(
    relay: RelayProcess, user: tuple[str, str]
) -> None:
    name, token = user
    # (asyncssh's client refuses control characters in user names; quotes and spaces get through.)
    forged = f'{name}" event=ssh.authenticated user="admin'

    with pytest.raises(asyncssh.PermissionDenied):
        await login(relay, forged, password="wrong", source="127.0.0.45")
    with pytest.raises(asyncssh.PermissionDenied):
        await login(relay, token, password=token, source="127.0.0.45")  # a token pasted as user name
    await asyncio.sleep(0.3)
    text = relay.log_text()
    assert f'user="{name}\\" event=ssh.authenticated user=\\"admin"' in text
    assert token not in text
