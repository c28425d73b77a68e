"""Behind Caddy, one user cannot take the relay (issue 11, item 3).

Every visitor arrives from Caddy's address, so the per-address caps of the relay's own front do not
apply. Real Caddy from Debian runs in front (plain HTTP on loopback, ``reverse_proxy`` as in
deploy/Caddyfile) and the relay trusts it. Visitors connect to Caddy from distinct 127.0.x.y
addresses, which Caddy passes on in X-Forwarded-For. Two caps must hold: requests in flight per
forwarded client address, and streams per tunnel owner across all their tunnels; and another user's
visitors must keep being served while they do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from .conftest import unique_name
from .harness import Backend, RelayProcess, SshTunnel, limit_args, open_tunnel, start_relay

LIMITS = {
    "http_max_connections": "300",
    "http_max_connections_per_address": "4",
    "http_max_connections_per_network": "200",
    "http_max_streams_per_user": "10",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Front:
    relay: RelayProcess
    port: int  # Caddy's


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    workdir = tmp_path_factory.mktemp("fair-share")
    workdir.chmod(0o700)
    relay = start_relay(workdir, extra=["--trust-proxy", "127.0.0.1/32", *limit_args(LIMITS)])
    port = _free_port()
    config = workdir / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tauto_https off\n}\n"
        f"http://:{port} {{\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:{relay.http_port}\n}}\n"
    )
    env = {**os.environ, "XDG_DATA_HOME": str(workdir / "data-home"), "XDG_CONFIG_HOME": str(workdir / "cfg")}
    log = open(workdir / "caddy.log", "w")  # noqa: SIM115 - closed below
    caddy = subprocess.Popen(
        ["caddy", "run", "--adapter", "caddyfile", "--config", str(config)], stdout=log, stderr=log, env=env
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if caddy.poll() is not None:
                raise RuntimeError((workdir / "caddy.log").read_text())
            time.sleep(0.1)
        yield Front(relay, port)
    finally:
        caddy.terminate()
        caddy.wait(10)
        log.close()
        relay.stop()


@dataclass
class User:
    name: str
    token: str
    tunnels: list[SshTunnel]

    def host(self, n: int = 0) -> str:
        return f"{self.name}-{n}.localhost" if n else f"{self.name}.localhost"


@pytest.fixture
async def users(front: Front) -> AsyncIterator[tuple[User, User]]:
    backend = Backend()
    await backend.start()
    made = []
    for prefix, count in (("mal", 3), ("bob", 1)):
        name = unique_name(prefix)
        token = front.relay.add_user(name)
        tunnels = []
        for n in range(count):
            bind = f"{name}-{n}" if n else name
            tunnels.append(
                await open_tunnel(front.relay, name, f"{bind}:80:127.0.0.1:{backend.port}", token=token)
            )
        made.append(User(name, token, tunnels))
    yield made[0], made[1]
    for user in made:
        for tunnel in user.tunnels:
            await tunnel.close()
    await backend.stop()


async def _websocket(
    front: Front, source: str, host: str, token: str, stack: contextlib.AsyncExitStack
) -> int:
    """Open a WebSocket through Caddy from ``source``; it stays open on ``stack``. Returns 101 or the
    status it was refused with."""
    session = await stack.enter_async_context(
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True))
    )
    try:
        ws = await stack.enter_async_context(
            session.ws_connect(
                f"http://127.0.0.1:{front.port}/ws", headers={"Host": host, "X-Relay-Token": token}
            )
        )
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.send_str("hi")
    assert (await ws.receive(timeout=10)).data == "echo:hi"
    return 101


async def _get(front: Front, source: str, host: str, token: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(
            f"http://127.0.0.1:{front.port}/echo", headers={"Host": host, "X-Relay-Token": token}
        ) as resp:
            return resp.status


async def test_one_forwarded_address_is_capped_and_others_are_served(
    front: Front, users: tuple[User, User]
) -> None:
    mallory, bob = users
    async with contextlib.AsyncExitStack() as held:
        got = [await _websocket(front, "127.0.9.50", mallory.host(), mallory.token, held) for _ in range(6)]
        assert got == [101] * 4 + [429] * 2  # http_max_connections_per_address, by forwarded address
        assert await _get(front, "127.0.9.50", bob.host(), bob.token) == 429  # that address is full
        assert await _get(front, "127.0.10.1", bob.host(), bob.token) == 200  # another is served
        assert await _websocket(front, "127.0.10.1", bob.host(), bob.token, held) == 101
    log = front.relay.log_text()
    assert "client=127.0.9.50" in log and "per_address cap of requests in flight" in log


async def test_one_user_with_many_tunnels_cannot_take_every_slot(
    front: Front, users: tuple[User, User]
) -> None:
    mallory, bob = users
    async with contextlib.AsyncExitStack() as held:
        got = [
            await _websocket(front, f"127.0.11.{n + 2}", mallory.host(n % 3), mallory.token, held)
            for n in range(16)
        ]
        assert got.count(101) == 10 and got[10:] == [503] * 6  # http_max_streams_per_user, all tunnels
        # Bob's visitors are served all along, through the same Caddy.
        assert (
            await asyncio.gather(*(_get(front, f"127.0.12.{n + 2}", bob.host(), bob.token) for n in range(5)))
            == [200] * 5
        )
        assert await _websocket(front, "127.0.12.20", bob.host(), bob.token, held) == 101
    # Mallory's streams are given back when her WebSockets close.
    async with contextlib.AsyncExitStack() as held:
        await asyncio.sleep(0.5)
        assert await _websocket(front, "127.0.11.40", mallory.host(), mallory.token, held) == 101
