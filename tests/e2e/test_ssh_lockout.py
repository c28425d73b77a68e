"""Strangers against users' SSH access (issue 11, items 1 and 2).

A connection is a user's only once it has authenticated as that user: the attacker knows alice's name
and public key (public keys are public) and holds half-open connections that asked "is this key
acceptable for alice?" and then never sign; alice, logging in with her real key through OpenSSH, must
not be counted against them. And the login slots are accounted per network as well as per address, so
twenty addresses of one /24 holding sockets leave room for a client from elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

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
    start_relay,
)

LIMITS = {
    "ssh_login_timeout": "30",
    "ssh_max_connections_per_user": "3",
    "ssh_max_unauthenticated": "40",
    "ssh_max_unauthenticated_per_address": "10",
    "ssh_max_unauthenticated_per_network": "12",
    "ssh_early_drop_unauthenticated": "40",  # = the total: no random refusals in these tests
}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("ssh-lockout")
    workdir.chmod(0o700)
    proc = start_relay(workdir, extra=limit_args(LIMITS))
    yield proc
    proc.stop()


class QueryOnlyKey(asyncssh.SSHKeyPair):
    """Someone else's public key, presented for an unsigned query; the signature never comes (the
    attacker has no private key), so the connection stays half-open until the login timeout."""

    def __init__(self, public: asyncssh.SSHKey) -> None:
        algorithm = public.algorithm
        sig_algs = public.sig_algorithms
        super().__init__(algorithm, algorithm, sig_algs, sig_algs, public.public_data, None)
        self.queried = asyncio.Event()

    async def sign_async(self, data: bytes) -> bytes:
        self.queried.set()  # the relay answered PK_OK: the query was accepted
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def hold_query(relay: RelayProcess, user: str, public: Path, source: str) -> asyncio.Task[object]:
    key = QueryOnlyKey(asyncssh.read_public_key(str(public)))
    task = asyncio.ensure_future(
        asyncssh.connect(
            "127.0.0.1",
            relay.ssh_port,
            username=user,
            client_keys=[key],
            agent_path=None,
            known_hosts=None,
            local_addr=(source, 0),
            preferred_auth="publickey",
            login_timeout=60,
        )
    )
    await asyncio.wait_for(key.queried.wait(), 10)
    return task


async def test_half_open_key_queries_do_not_count_toward_the_users_cap(relay: RelayProcess) -> None:
    alice = unique_name("lk")
    token = relay.add_user(alice)
    private = relay.add_key(alice)
    attackers = [
        await hold_query(relay, alice, Path(f"{private}.pub"), source)
        for source in ["127.0.3.2", "127.0.4.2"]
        for _ in range(10)
    ]
    backend = Backend()
    await backend.start()
    try:
        started = time.monotonic()
        tunnel = await open_tunnel(relay, alice, f"{alice}:80:127.0.0.1:{backend.port}", key=private)
        took = time.monotonic() - started
        try:
            assert took < 2, f"alice waited {took:.1f} s"
            assert f"http://{alice}.localhost" in tunnel.stdout_lines[0]
            reply = await fetch(relay, f"{alice}.localhost", "/echo", headers={"X-Relay-Token": token})
            assert reply.status == 200 and reply.json()["path"] == "/echo"
        finally:
            await tunnel.close()
        # Still pending, still nobody's: the attack held for the whole time.
        assert not any(task.done() for task in attackers)
    finally:
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        await backend.stop()


async def hold_login_slot(relay: RelayProcess, source: str) -> asyncio.StreamWriter | None:
    """A raw socket that says hello as SSH and then nothing; None if the relay closed it at once
    (before its banner: a refusal at admission)."""
    reader, writer = await connect_from(relay.ssh_port, source)
    try:
        writer.write(b"SSH-2.0-Hostile_0.1\r\n")
        banner = await asyncio.wait_for(reader.readline(), 5)
    except ConnectionError:
        banner = b""
    if banner.startswith(b"SSH-2.0-Relay"):
        return writer
    assert banner == b"", banner
    writer.close()
    return None


async def test_twenty_addresses_of_one_network_leave_room_for_another(relay: RelayProcess) -> None:
    held = [await hold_login_slot(relay, f"127.0.5.{host}") for host in range(2, 22) for _ in range(3)]
    admitted = [w for w in held if w is not None]
    try:
        assert len(admitted) == 12  # the /24's share, whatever the number of addresses in it
        bob = unique_name("nw")
        token = relay.add_user(bob)
        backend = Backend()
        await backend.start()
        try:
            tunnel = await open_tunnel(relay, bob, f"{bob}:80:127.0.0.1:{backend.port}", token=token)
            reply = await fetch(relay, f"{bob}.localhost", "/echo", headers={"X-Relay-Token": token})
            assert reply.status == 200
            await tunnel.close()
        finally:
            await backend.stop()
        assert "ssh.refused" in relay.log_text() and 'why="per_network' in relay.log_text()
    finally:
        for writer in admitted:
            writer.close()
