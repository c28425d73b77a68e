"""A cluster's nodes failing under a live tunnel (DESIGN §3.9): a killed or frozen node's URL comes
back through the others within 10 s (for a client given every node's address, and for one given a
name with a record per node), a thawed node serves nothing it lost, and two users racing for one
name on two nodes leave exactly one owner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.pgserver import shared_server

from .conftest import unique_name
from .harness import Backend, ClientProcess, RelayProcess, open_tunnel, start_client
from .test_cluster import ADDRESSES, relay_cli, routed, start_node

#: How long a visitor's request may take before it counts as a hang (the offline answer and a
#: dead node's 502 must both come quicker).
REQUEST_TIMEOUT = 5.0
#: The cluster's one name in the client's private /etc/hosts: a record for each of two nodes.
CLUSTER_NAME = "relay-nodes.test"
#: The refused one of two racing ``ssh -R`` exits (and prints no URL) instead of idling.
EXIT_ON_REFUSAL = ["-o", "ExitOnForwardFailure=yes"]


def _cluster(tmp_path: Path, count: int, ssh_port: int = 0) -> Iterator[list[RelayProcess]]:
    """``count`` nodes on a new database (node 1 first: it makes the schema), stopped (thawed
    first, if a test froze one) at the end."""
    tmp_path.chmod(0o700)
    url = shared_server().new_database()
    started = [start_node(tmp_path, url, 0, ssh_port)]
    started += [start_node(tmp_path, url, i, ssh_port) for i in range(1, count)]
    yield started
    for node in started:
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(signal.SIGCONT)
        node.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    yield from _cluster(tmp_path, 3)


async def _client_on(
    nodes: list[RelayProcess], home: Path, backend: Backend, relay: str | None, prefix: Sequence[str]
) -> tuple[ClientProcess, str, str]:
    """relay-client given ``relay`` (default: every node's address, node 1 first), run under
    ``prefix``: (its process, host, token)."""
    name = unique_name("ha")
    token = nodes[0].add_user(name)
    relay = relay or ",".join(f"{n.address}:{n.ssh_port}" for n in nodes)
    args = ["--relay", relay, "--user", name, "--token", token, "--port", str(backend.port)]
    client = await start_client(nodes[0], home, args, prefix=prefix)
    await routed(nodes, f"{name}.localhost", token)  # every node knows where it is
    return client, f"{name}.localhost", token


@dataclass
class Load:
    """Visitors asking for a host through some nodes, every 50 ms each: what they got, and when."""

    nodes: list[RelayProcess]
    host: str
    token: str
    seen: list[tuple[float, str, int | None, float]] = field(default_factory=list)  # (at, node, status, took)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.gather(*(self._one(session, node) for node in self.nodes))
                await asyncio.sleep(0.05)

    async def _one(self, session: aiohttp.ClientSession, node: RelayProcess) -> None:
        started = time.monotonic()
        status: int | None = None
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, TimeoutError):
            async with session.get(
                f"{node.base}/echo", headers={"Host": self.host, "X-Relay-Token": self.token}
            ) as resp:
                await resp.read()
                status = resp.status
        self.seen.append((started, node.address, status, time.monotonic() - started))

    def back_after(self, since: float) -> float | None:
        """Seconds from ``since`` until every node answered 200 again (and went on so), or None."""
        last_bad = since
        good: set[str] = set()
        for at, node, status, _ in self.seen:
            if at < since:
                continue
            if status == 200:
                good.add(node)
            else:
                last_bad, good = at, set()
        return last_bad - since if len(good) == len(self.nodes) else None


@contextlib.asynccontextmanager
async def _under_load(
    nodes: list[RelayProcess],
    home: Path,
    backend: Backend,
    *,
    relay: str | None = None,
    prefix: Sequence[str] = (),
) -> AsyncIterator[tuple[ClientProcess, Load]]:
    """A relay-client tunnel held by node 1, and visitors through the other nodes for a second
    already (``relay``, ``prefix``: as :func:`_client_on`)."""
    client, host, token = await _client_on(nodes, home, backend, relay, prefix)
    load = Load(nodes[1:], host, token)
    running = asyncio.ensure_future(load.run())
    try:
        await asyncio.sleep(1.0)
        yield client, load
    finally:
        running.cancel()
        await client.stop()


def _nodes(node: RelayProcess) -> dict[str, bool]:
    listed = relay_cli(node, "nodes")["nodes"]
    assert isinstance(listed, list)
    return {n["name"]: n["alive"] for n in listed}


async def test_the_url_is_back_within_10_s_after_its_node_is_killed(
    nodes: list[RelayProcess], backend: Backend, tmp_path: Path
) -> None:
    async with _under_load(nodes, tmp_path, backend) as (client, load):
        assert {s for _, _, s, _ in load.seen} == {200}  # served through nodes 2 and 3 before
        killed = time.monotonic()
        nodes[0].proc.kill()  # kill -9: no goodbye to the store, the clients or the other nodes
        await client.stderr_until("back: ", timeout=20)  # the client's next node took it
        await asyncio.sleep(2.0)  # visitors see it through every node again
    back = load.back_after(killed)
    assert back is not None and back < 10.0, load.seen[-20:]
    assert max(took for _, _, _, took in load.seen) < REQUEST_TIMEOUT  # never a hang


async def test_a_frozen_node_is_taken_over_and_serves_nothing_after_it_thaws(
    nodes: list[RelayProcess], backend: Backend, tmp_path: Path
) -> None:
    async with _under_load(nodes, tmp_path, backend) as (_, load):
        host = load.host
        frozen = time.monotonic()
        nodes[0].proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(12.0)
        assert _nodes(nodes[1])["n1"] is False  # silent for 10 s: dead, its routes void
        await asyncio.sleep(3.0)
        back = load.back_after(frozen)
        assert back is not None and back < 15.0, load.seen[-20:]  # the client moved on, the URL is back
        nodes[0].proc.send_signal(signal.SIGCONT)
        thawed = time.monotonic()
        deadline = thawed + 10
        while not _nodes(nodes[1]).get("n1"):
            assert time.monotonic() < deadline, "node 1 did not come back after SIGCONT"
            await asyncio.sleep(0.2)
        load.nodes = nodes  # now through node 1 as well
        await asyncio.sleep(3.0)
        held = [t["node"] for t in _tunnels(nodes[1]) if t["host"] == host]
        assert held in (["n2"], ["n3"])  # held by the node the client moved to
    assert load.back_after(thawed + 1.0) == 0.0, load.seen[-30:]  # node 1 hands it over by a hop


def _shared_port() -> int:
    """A port free on the first two node addresses (a DNS name's records share one port)."""
    while True:
        with socket.create_server((ADDRESSES[0], 0)) as first:
            port = int(first.getsockname()[1])
            with contextlib.suppress(OSError), socket.create_server((ADDRESSES[1], port)):
                return port


@pytest.fixture
def named_nodes(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    """Two nodes listening for SSH on one port, at the addresses CLUSTER_NAME resolves to."""
    yield from _cluster(tmp_path, 2, _shared_port())


def _with_hosts(hosts: Path) -> list[str]:
    """A command prefix: what follows runs with ``hosts`` as its /etc/hosts, bind-mounted in a mount
    namespace of its own (the machine's resolver and files are untouched)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", *user, "--mount", "--propagation", "private", "sh", "-c", script, str(hosts)]


@pytest.mark.parametrize("failure", ["killed", "frozen"])
async def test_a_client_given_one_name_moves_to_its_next_record(
    named_nodes: list[RelayProcess], backend: Backend, tmp_path: Path, failure: str
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{ADDRESSES[0]} {CLUSTER_NAME}\n{ADDRESSES[1]} {CLUSTER_NAME}\n")
    first, second = named_nodes
    relay = f"{CLUSTER_NAME}:{first.ssh_port}"
    async with _under_load(named_nodes, tmp_path, backend, relay=relay, prefix=_with_hosts(hosts)) as (
        client,
        load,
    ):
        host = load.host
        assert [t["node"] for t in _tunnels(second) if t["host"] == host] == ["n1"]  # the first record
        failed = time.monotonic()
        first.proc.send_signal(signal.SIGKILL if failure == "killed" else signal.SIGSTOP)
        await client.stderr_until("back: ", timeout=30)  # on the name's other record
        await asyncio.sleep(REQUEST_TIMEOUT + 1.0)  # a request caught by the freeze ends; others follow
        assert [t["node"] for t in _tunnels(second) if t["host"] == host] == ["n2"]
    back = load.back_after(failed)
    # Within 10 s of a death (DESIGN §3.9); a frozen node is first noticed by the keepalive, as in
    # the test of a frozen node above.
    assert back is not None and back < (10.0 if failure == "killed" else 15.0), load.seen[-20:]


def _tunnels(node: RelayProcess) -> list[dict[str, str]]:
    tunnels = relay_cli(node, "tunnels")["tunnels"]
    assert isinstance(tunnels, list)
    return tunnels


async def test_two_users_racing_for_one_name_on_two_nodes_leave_one_owner(
    nodes: list[RelayProcess], backend: Backend
) -> None:
    name = unique_name("race")
    alice, bob = unique_name("al"), unique_name("bo")
    tokens = [nodes[0].add_user(alice), nodes[0].add_user(bob)]
    spec = f"{name}:80:127.0.0.1:{backend.port}"
    tunnels = await asyncio.gather(
        open_tunnel(nodes[0], alice, spec, token=tokens[0], expect_url=False, extra=EXIT_ON_REFUSAL),
        open_tunnel(nodes[1], bob, spec, token=tokens[1], expect_url=False, extra=EXIT_ON_REFUSAL),
    )
    try:
        outs = []
        for tunnel in tunnels:
            assert tunnel.proc.stdout is not None and tunnel.proc.stderr is not None
            line = await asyncio.wait_for(tunnel.proc.stdout.readline(), 15)
            outs.append(line.decode())
        won = [f"http://{name}.localhost" in out for out in outs]
        assert won.count(True) == 1, outs
        with contextlib.closing(nodes[2].store()) as store:
            owner = store.name_owner(name)
            assert owner == store.get_user(alice if won[0] else bob).id
    finally:
        for tunnel in tunnels:
            await tunnel.close()
