"""The wide-area link of the benchmark: the delaying proxy adds its delay each way, keeps bytes and
their order, and passes a half-close on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.bench.delay_proxy import DelayProxy

DELAY = 0.05


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()  # after the peer's half-close: everything was echoed


@pytest.fixture
async def proxy() -> AsyncIterator[DelayProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = DelayProxy(server.sockets[0].getsockname()[1], DELAY)
    await proxy.start()
    yield proxy
    await proxy.stop()
    server.close()
    await server.wait_closed()


async def test_a_round_trip_takes_the_delay_both_ways(proxy: DelayProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    rtts = []
    for _ in range(3):
        started = time.perf_counter()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        rtts.append(time.perf_counter() - started)
    assert all(rtt >= 2 * DELAY for rtt in rtts), rtts
    # The fastest of three is free of scheduling noise: the delay was added once each way, not more.
    assert min(rtts) < 3 * DELAY, rtts
    writer.close()
    await writer.wait_closed()


async def test_bytes_keep_their_order_and_a_half_close_passes(proxy: DelayProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    sent = b"".join(i.to_bytes(4, "big") for i in range(500_000))  # 2 MB in many chunks
    for start in range(0, len(sent), 30_000):
        writer.write(sent[start : start + 30_000])
    writer.write_eof()
    got = await asyncio.wait_for(reader.read(), 10)  # ends once the echo server closes
    assert got == sent
    writer.close()
    await writer.wait_closed()
