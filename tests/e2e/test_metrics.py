"""Prometheus metrics (issue 13) from a real relay with --metrics-bind, parsed with prometheus-client's
own parser: counters move by the right amounts for known traffic, bytes move while a WebSocket is
still open (not when it closes), refusals are counted by reason, per-tunnel series go with the name,
and nothing of it is on the visitor port."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Owned, unique_name
from .harness import Backend, RelayProcess, fetch, open_tunnel, start_relay

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("relay")
    workdir.chmod(0o700)
    proc = start_relay(workdir, extra=["--metrics-bind", "127.0.0.1:0"])
    yield proc
    proc.stop()


def metrics_url(relay: RelayProcess) -> str:
    found = re.search(r"metrics on (127\.0\.0\.1:\d+)", "\n".join(relay.output))
    assert found, relay.output
    return f"http://{found[1]}/metrics"


async def scrape(relay: RelayProcess) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(metrics_url(relay)) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_by_the_traffic(relay: RelayProcess, owned: Owned) -> None:
    before = await scrape(relay)
    assert value(before, "relay_build_info", version=__import__("relay").__version__) == 1
    token = {"X-Relay-Token": owned.token}
    for _ in range(5):
        assert (await fetch(relay, owned.host, "/echo", headers=token)).status == 200
    download = await fetch(relay, owned.host, "/download?size=1000000", headers=token)
    assert download.status == 200 and len(download.body) == 1_000_000
    assert (await fetch(relay, owned.host, "/echo")).status == 401
    after = await scrape(relay)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("relay_http_requests_total", code="200") == 6
    assert moved("relay_tunnel_requests_total", host=owned.host) == 6
    assert moved("relay_refusals_total", reason="unauthorized") == 1
    out = moved("relay_tunnel_bytes_total", host=owned.host, direction="out")
    assert 1_000_000 < out < 1_000_000 + 5 * 2000 + 1000  # the download, five echoes, the heads
    assert moved("relay_bytes_total", direction="out") >= out
    assert moved("relay_http_request_duration_seconds_count") == 7
    assert value(after, "relay_tunnel_up", host=owned.host) == 1
    assert value(after, "relay_tunnels") >= 1 and value(after, "relay_ssh_connections") >= 1


async def test_websocket_bytes_move_while_it_is_open(relay: RelayProcess, owned: Owned) -> None:
    before = await scrape(relay)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{relay.base}/ws", headers={"Host": owned.host, "X-Relay-Token": owned.token}
        ) as ws:
            payload = b"x" * 50_000
            await ws.send_bytes(payload)
            assert (await ws.receive(timeout=5)).data == payload
            during = await scrape(relay)
            assert value(during, "relay_websockets_open") == 1
            moved_in = value(during, "relay_tunnel_bytes_total", host=owned.host, direction="in") - value(
                before, "relay_tunnel_bytes_total", host=owned.host, direction="in"
            )
            assert moved_in >= 50_000  # counted as it flowed, the socket still open
    for _ in range(20):
        if value(await scrape(relay), "relay_websockets_open") == 0:
            break
        await asyncio.sleep(0.1)
    assert value(await scrape(relay), "relay_websockets_open") == 0


async def test_series_go_with_the_name_and_metrics_are_not_on_the_visitor_port(
    relay: RelayProcess, backend: Backend
) -> None:
    name = unique_name("gone")
    token = relay.add_user(name)
    other = unique_name("temp")
    tunnel = await open_tunnel(relay, name, f"{other}:80:127.0.0.1:{backend.port}", token=token)
    host = f"{other}.localhost"
    assert (await fetch(relay, host, "/echo", headers={"X-Relay-Token": token})).status == 200
    await tunnel.close()
    for _ in range(50):
        if value(await scrape(relay), "relay_tunnel_up", host=host) == 0:
            break
        await asyncio.sleep(0.1)
    offline = await scrape(relay)
    assert ("relay_tunnel_up", (("host", host),)) in offline and value(
        offline, "relay_tunnel_requests_total", host=host
    ) == 1
    released = subprocess.run(
        [sys.executable, "-m", "relay", "name", "release", other, "--data-dir", str(relay.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert released.returncode == 0, released.stderr
    assert ("relay_tunnel_up", (("host", host),)) not in await scrape(relay)
    for public_host in ("localhost", host):
        assert (await fetch(relay, public_host, "/metrics")).status in (401, 404)
