"""Start-up, clean-up and shutdown of a real relay: the registry empties, dead clients answer 502 at
once, SIGTERM lets in-flight requests finish, and one data dir serves one relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.stores import stored_bytes

from .conftest import Owned, unique_name
from .harness import POSTGRES_MODE, Backend, RelayProcess, fetch, open_tunnel, serve_argv, start_relay


def live_tunnels(relay: RelayProcess) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "relay", "tunnels", "--json", "--data-dir", str(relay.data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    doc = json.loads(out.stdout)
    assert doc["running"] is True
    return list(doc["tunnels"])


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_registry_is_empty_after_clients_leave(workdir: Path, backend: Backend) -> None:
    relay = start_relay(workdir)
    try:
        tunnels = []
        for _ in range(3):
            name = unique_name("gone")
            token = relay.add_user(name)
            tunnels.append(await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token))
        hosts = {t["host"] for t in live_tunnels(relay)}
        assert len(hosts) == 3
        assert (await fetch(relay, "localhost", "/_relay/health")).json() == {"status": "ok"}
        for tunnel in tunnels:
            await tunnel.close()

        async def empty() -> bool:
            return live_tunnels(relay) == []

        await wait_for(empty)
        assert live_tunnels(relay) == []
    finally:
        assert relay.stop() == 0


async def test_killed_client_gives_502_not_a_hang(relay: RelayProcess, owned: Owned) -> None:
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token})).status == 200
    owned.tunnel.kill()
    await owned.tunnel.proc.wait()

    async def offline() -> bool:
        return (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token})).status == 502

    started = time.monotonic()
    await wait_for(offline, 5)
    reply = await fetch(
        relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token, "Accept": "text/html"}
    )
    assert reply.status == 502 and b"offline" in reply.body
    assert time.monotonic() - started < 5


async def test_backend_not_listening_gives_502(relay: RelayProcess) -> None:
    name = unique_name("dead")
    token = relay.add_user(name)
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:1", token=token)
    try:
        started = time.monotonic()
        reply = await fetch(relay, f"{name}.localhost", "/", headers={"X-Relay-Token": token})
        assert reply.status == 502
        assert b"refused" in reply.body
        assert time.monotonic() - started < 5
    finally:
        await tunnel.close()


async def test_sigterm_finishes_in_flight_requests_and_tells_ssh_clients(
    workdir: Path, backend: Backend
) -> None:
    relay = start_relay(workdir)
    name = unique_name("term")
    token = relay.add_user(name)
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{relay.base}/slow?delay=0.15", headers={"Host": f"{name}.localhost", "X-Relay-Token": token}
            ) as resp,
        ):
            assert resp.status == 200
            first = await resp.content.read(1000)
            relay.proc.send_signal(signal.SIGTERM)
            rest = await resp.read()
        assert len(first) + len(rest) == 10_000
        code = await asyncio.get_running_loop().run_in_executor(None, relay.stop)
        assert code == 0
        assert tunnel.proc.stderr is not None
        err = await asyncio.wait_for(tunnel.proc.stderr.read(), 10)
        assert b"shutting down" in err
        assert "relay: stopped" in relay.output
    finally:
        await tunnel.close()
        relay.stop()


def test_second_relay_on_same_data_dir_refuses(relay: RelayProcess) -> None:
    out = subprocess.run(
        serve_argv(relay.data_dir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"another relay serve (pid {relay.proc.pid}) is running" in out.stderr
    assert relay.proc.poll() is None


def test_first_start_prints_token_fingerprint_and_keeps_secrets_private(relay: RelayProcess) -> None:
    assert relay.admin_token.startswith("rly_")
    assert relay.fingerprint.startswith("SHA256:")
    banner = "\n".join(relay.output)
    assert "-R owner:80:localhost:8888 owner@localhost" in banner
    assert stat.S_IMODE(os.stat(relay.data_dir).st_mode) == 0o700
    # A cluster node keeps its store and host key in PostgreSQL; the data dir names the store.
    private = ("store.url",) if POSTGRES_MODE else ("relay.db", "ssh_host_ed25519_key")
    for name in private:
        assert stat.S_IMODE(os.stat(relay.data_dir / name).st_mode) == 0o600
    with contextlib.closing(relay.store()) as store:
        assert relay.admin_token.split("_", 2)[2].encode() not in stored_bytes(store)


async def test_restart_keeps_users_names_and_host_key(workdir: Path, backend: Backend) -> None:
    relay = start_relay(workdir)
    name = unique_name("keep")
    token = relay.add_user(name)
    fingerprint = relay.fingerprint
    assert relay.stop() == 0
    again = start_relay(workdir)
    try:
        assert again.fingerprint == fingerprint
        assert again.admin_token == ""  # the first-start token is printed once only
        tunnel = await open_tunnel(again, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
        await tunnel.close()
    finally:
        assert again.stop() == 0


async def test_revoking_a_token_ends_its_sessions_and_ssh_connections(
    relay: RelayProcess, backend: Backend
) -> None:
    name = unique_name("rev")
    relay.add_user(name)
    out = subprocess.run(
        [sys.executable, "-m", "relay", "token", "create", name, "--json", "--data-dir", str(relay.data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    created = json.loads(out.stdout)
    token = created["token"]
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    host = f"{name}.localhost"
    exchanged = await fetch(relay, host, f"/echo?relay_token={token}")
    cookie = exchanged.set_cookies[0].split(";", 1)[0]
    assert (await fetch(relay, host, "/echo", headers={"Cookie": cookie})).status == 200
    subprocess.run(
        [sys.executable, "-m", "relay", "token", "revoke", created["id"], "--data-dir", str(relay.data_dir)],
        check=True,
        capture_output=True,
    )
    # The browser session made with it ends at once...
    assert (await fetch(relay, host, "/echo", headers={"Cookie": cookie})).status == 401
    # ...and the SSH connection that logged in with it is closed within the re-check interval.
    await asyncio.wait_for(tunnel.proc.wait(), 20)
    assert tunnel.proc.stderr is not None
    assert b"revoked" in await tunnel.proc.stderr.read()


def test_first_start_prints_commands_that_keep_the_token_off_command_lines(relay: RelayProcess) -> None:
    """What the relay tells its owner to run must not put the token in argv (readable by any local
    user): the ssh line prompts for it, the client line passes the connect string in RELAY_URL."""
    printed = "\n".join(relay.output)
    assert relay.admin_token and relay.admin_token in printed  # shown once, on its own line
    commands = [line.strip() for line in relay.output if "ssh " in line or "relay-client" in line]
    client = [c for c in commands if "relay-client connect" in c]
    connect = f"relay://owner:{relay.admin_token}@localhost:{relay.ssh_port}#{relay.fingerprint}"
    assert f"    {connect}" in relay.output  # the one secret, on its own line
    assert client == [c for c in client if c.startswith(f"RELAY_URL='{connect}' relay-client connect ")]
    assert client and all("--token" not in c for c in commands)
    ssh = [c for c in commands if c.startswith("ssh ")]
    assert ssh and all(relay.admin_token not in c for c in ssh)
