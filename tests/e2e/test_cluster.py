"""Three relay nodes on one real PostgreSQL, bound to 127.0.0.11, .12 and .13 (DESIGN §3.9): a
tunnel held by one node is served through the others, one authenticated hop away."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.pgserver import shared_server

from .conftest import unique_name
from .harness import (
    Backend,
    RelayProcess,
    cookie_pair,
    fetch,
    open_tunnel,
    pattern_sha256,
    sign_in,
    start_relay,
)

MB = 1024 * 1024
ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


def start_node(workdir: Path, url: str, index: int, ssh_port: int = 0) -> RelayProcess:
    address = ADDRESSES[index]
    node = workdir / f"n{index + 1}"
    node.mkdir(mode=0o700)
    extra = ["--store", url, "--node", f"n{index + 1}", "--cluster-address", f"{address}:0"]
    return start_relay(node, extra=extra, bind=address, ssh_port=ssh_port)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RelayProcess]]:
    workdir = tmp_path_factory.mktemp("cluster")
    workdir.chmod(0o700)
    url = shared_server().new_database()
    nodes = [start_node(workdir, url, 0)]  # the first makes the schema, the admin and the keys
    nodes += [start_node(workdir, url, i) for i in (1, 2)]
    yield nodes
    for node in nodes:
        node.stop()


def relay_cli(node: RelayProcess, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "relay", *args, "--json", "--data-dir", str(node.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
async def held(cluster: list[RelayProcess], backend: Backend) -> AsyncIterator[tuple[str, str]]:
    """A user's tunnel, held by node 1: (host, token)."""
    name = unique_name("cl")
    token = cluster[0].add_user(name)
    tunnel = await open_tunnel(cluster[0], name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    host = f"{name}.localhost"
    await routed(cluster, host, token)
    yield host, token
    await tunnel.close()


async def routed(cluster: list[RelayProcess], host: str, token: str, timeout: float = 5.0) -> None:
    """Wait until every node says ``host`` is live (the route has spread to all of them)."""
    deadline = time.monotonic() + timeout
    for relay in cluster:
        while True:
            reply = await fetch(relay, host, "/_relay/status", headers={"X-Relay-Token": token})
            if reply.status == 200 and reply.json()["live"] is True:
                break
            assert time.monotonic() < deadline, f"{host} is not live on {relay.address}: {reply.body[:200]!r}"
            await asyncio.sleep(0.05)


def test_every_node_is_listed_alive_with_its_address(cluster: list[RelayProcess]) -> None:
    doc = relay_cli(cluster[1], "nodes")
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    assert [(n["name"], n["alive"]) for n in nodes] == [("n1", True), ("n2", True), ("n3", True)]
    assert [str(n["address"]).rsplit(":", 1)[0] for n in nodes] == list(ADDRESSES)
    # One host key for the whole cluster: a client's pin holds on every node.
    assert len({relay.fingerprint for relay in cluster if relay.fingerprint}) == 1


async def test_a_second_node_with_a_live_nodes_name_is_refused(
    cluster: list[RelayProcess], tmp_path: Path
) -> None:
    url = (cluster[0].data_dir / "store.url").read_text().strip()
    tmp_path.chmod(0o700)
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--data-dir", str(tmp_path / "d"), "--bind", ADDRESSES[2],
         "--http-port", "0", "--ssh-port", "0", "--store", url, "--node", "n2",
         "--cluster-address", f"{ADDRESSES[2]}:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "node 'n2' is already in the cluster" in done.stderr, done.stderr


async def test_requests_reach_a_tunnel_through_every_node(
    cluster: list[RelayProcess], held: tuple[str, str]
) -> None:
    host, token = held
    for relay in cluster:
        reply = await fetch(relay, host, "/echo?via=" + relay.address, headers={"X-Relay-Token": token})
        assert reply.status == 200, (relay.address, reply.status, reply.body[:300])
        seen = reply.json()
        assert seen["path"] == f"/echo?via={relay.address}"
        assert "x-relay-token" not in {k.lower() for k in seen["headers"]}  # stripped before the hop
    refused = await fetch(cluster[2], host, "/echo")  # no credential: refused where it arrived
    assert refused.status in (302, 401)


async def test_a_64_mib_download_through_another_node_is_intact(
    cluster: list[RelayProcess], held: tuple[str, str]
) -> None:
    host, token = held
    size, digest, received = 64 * MB, hashlib.sha256(), 0
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{cluster[1].base}/download?size={size}", headers={"Host": host, "X-Relay-Token": token}
        ) as resp,
    ):
        assert resp.status == 200
        async for piece in resp.content.iter_chunked(256 * 1024):
            digest.update(piece)
            received += len(piece)
    assert received == size and digest.hexdigest() == pattern_sha256(size)


async def test_a_websocket_echo_through_another_node(
    cluster: list[RelayProcess], held: tuple[str, str]
) -> None:
    host, token = held
    origin = f"http://{host}:{cluster[2].http_port}"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{cluster[2].base}/ws", headers={"Host": host, "X-Relay-Token": token, "Origin": origin}
        ) as ws,
    ):
        for text in ("one", "two", "x" * 100_000):
            await ws.send_str(text)
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == f"echo:{text}"


async def test_sign_in_on_one_node_then_visits_through_another(
    cluster: list[RelayProcess], held: tuple[str, str]
) -> None:
    host, token = held
    state_cookie, code, posted = await sign_in(cluster[1], host, token)  # signed in on node 2
    assert code, posted.body[:300]
    hand_off = await fetch(
        cluster[2], host, f"/_relay/sso?code={code}&next=%2Fecho", headers={"Cookie": state_cookie}
    )
    assert hand_off.status == 302, hand_off.body[:300]  # redeemed on node 3
    session = cookie_pair(next(c for c in hand_off.set_cookies if "relay_session" in c))
    for relay in (cluster[0], cluster[2]):  # the host session works whichever node the browser reaches
        page = await fetch(relay, host, "/echo", headers={"Cookie": session})
        assert page.status == 200 and page.json()["path"] == "/echo"
    again = await fetch(
        cluster[0], host, f"/_relay/sso?code={code}&next=%2F", headers={"Cookie": state_cookie}
    )
    assert again.status != 302 or "relay_session" not in " ".join(again.set_cookies)  # one use, cluster-wide


async def test_a_forged_hop_is_refused_and_logged(cluster: list[RelayProcess], held: tuple[str, str]) -> None:
    host, _ = held
    nodes = relay_cli(cluster[0], "nodes")["nodes"]
    assert isinstance(nodes, list)
    address, port = str(nodes[0]["address"]).rsplit(":", 1)
    forged = f"RELAY-HOP/1 n2 n1 {host} {time.time():.3f} {'a' * 32} {'0' * 64}\n".encode()
    for source in ("127.0.0.1", ADDRESSES[1]):  # a visitor's address, then a node's with a bad MAC
        reader, writer = await asyncio.open_connection(address, int(port), local_addr=(source, 0))
        writer.write(forged + f"GET /echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"NO ") and b"HTTP/1.1" not in answer, answer
    log = cluster[0].log_text()
    assert (
        "cluster.hop_refused" in log and "not from a node of this cluster" in log and "wrong signature" in log
    )


async def test_a_takeover_on_another_node_closes_the_first_within_a_second(
    cluster: list[RelayProcess], backend: Backend
) -> None:
    name = unique_name("tk")
    token = cluster[0].add_user(name)
    spec = f"{name}:80:127.0.0.1:{backend.port}"
    first = await open_tunnel(cluster[0], name, spec, token=token)
    try:
        await routed(cluster, f"{name}.localhost", token)
        second = await open_tunnel(cluster[1], name, spec, token=token)  # the same user, on node 2
        taken = time.monotonic()
        try:
            assert first.proc.stderr is not None

            async def notice() -> str:
                while True:
                    line = (await first.proc.stderr.readline()).decode()  # type: ignore[union-attr]
                    if not line or "taken over on node n2" in line:
                        return line

            line = await asyncio.wait_for(notice(), 5)
            took = time.monotonic() - taken
            assert "taken over on node n2" in line and took < 1.0, (line, took)
            # Node 3 hears of the move within a second too, and then sends its visitors to node 2.
            deadline = time.monotonic() + 1.0
            while (
                reply := await fetch(
                    cluster[2], f"{name}.localhost", "/echo", headers={"X-Relay-Token": token}
                )
            ).status != 200:
                assert time.monotonic() < deadline, reply.body[:300]
                await asyncio.sleep(0.05)
        finally:
            await second.close()
    finally:
        await first.close()
