"""Bodies stream both ways through the relay, checked by SHA-256, without sitting in memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os

import aiohttp

from .conftest import Owned
from .harness import RelayProcess, pattern_bytes, pattern_sha256

MB = 1024 * 1024


def relay_rss_kib(relay: RelayProcess) -> int:
    with open(f"/proc/{relay.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_100mb_download_is_streamed_intact(relay: RelayProcess, owned: Owned) -> None:
    size = 100 * MB
    digest = hashlib.sha256()
    received = 0
    rss_before = relay_rss_kib(relay)
    peak = rss_before
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{relay.base}/download?size={size}", headers={"Host": owned.host, "X-Relay-Token": owned.token}
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(size)
        async for piece in resp.content.iter_chunked(256 * 1024):
            digest.update(piece)
            received += len(piece)
            if received % (10 * MB) < 256 * 1024:
                peak = max(peak, relay_rss_kib(relay))
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)
    # Streaming, not buffering: the relay's memory grows by far less than the body.
    assert peak - rss_before < 40 * 1024, (rss_before, peak)


async def test_streamed_uploads_content_length_and_chunked(relay: RelayProcess, owned: Owned) -> None:
    size = 64 * MB + 123
    headers = {"Host": owned.host, "X-Relay-Token": owned.token}
    async with aiohttp.ClientSession() as session:
        # Chunked: aiohttp sends an async generator with Transfer-Encoding: chunked.
        async with session.post(f"{relay.base}/upload", data=pattern_bytes(size), headers=headers) as resp:
            assert resp.status == 200
            assert await resp.json() == {"sha256": pattern_sha256(size), "length": size}
        blob = os.urandom(3 * MB)
        async with session.post(
            f"{relay.base}/upload",
            data=io.BytesIO(blob),
            headers={**headers, "Content-Length": str(len(blob))},
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"sha256": hashlib.sha256(blob).hexdigest(), "length": len(blob)}


async def test_concurrent_requests_share_the_tunnel(relay: RelayProcess, owned: Owned) -> None:
    headers = {"Host": owned.host, "X-Relay-Token": owned.token}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> str:
            async with session.get(f"{relay.base}/echo?i={i}", headers=headers) as resp:
                assert resp.status == 200
                return str((await resp.json())["path"])

        paths = await asyncio.gather(*(one(i) for i in range(60)))
    assert sorted(paths) == sorted(f"/echo?i={i}" for i in range(60))
