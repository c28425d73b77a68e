"""The visitor workloads, run against one stack at a time. Each checks that the stack served the right
bytes (and raises if not) and returns its figures; none ever judges a speed."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import aiohttp

from . import wrk
from .backends import BIG_PATH, SMALL_BODY, SMALL_PATH, WS_PATH, Files
from .cpu import CpuMeter, CpuUse, Sides, per_unit
from .http_client import Downloader, Endpoint, fetch


class WrongBytes(AssertionError):
    """A stack answered, but not with what the backend serves."""


@dataclass
class Sizes:
    """How much each workload does: a full run's, or ``--quick``'s."""

    wrk_seconds: float
    connections: int
    ws_round_trips: int
    ws_messages: int


#: Messages in flight at once in the WebSocket throughput test.
WS_WINDOW = 64
#: WebSocket payload, bytes (a small kernel message, not a bulk transfer).
WS_PAYLOAD = 64


async def bulk(
    endpoint: Endpoint, files: Files, downloader: Downloader, sides: Sides | None = None
) -> dict[str, float]:
    with CpuMeter(sides) as use:
        got = await downloader.aget(endpoint, BIG_PATH)
    if got.status != 200 or got.length != files.big_size or got.sha256 != files.big_sha256:
        raise WrongBytes(f"download: status {got.status}, {got.length} bytes, sha256 {got.sha256[:16]}…")
    figures = {"bulk_mb_s": got.mb_per_s}
    if sides is not None:
        mb = got.length / 1e6
        figures["bulk_mb_per_cpu_s"] = mb / use.server_s if use.server_s else 0.0
        figures["bulk_mb_per_client_cpu_s"] = mb / use.client_s if use.client_s else 0.0
    return figures


async def check_small(endpoint: Endpoint) -> None:
    status, body = await fetch(endpoint, SMALL_PATH)
    if status != 200 or body != SMALL_BODY:
        raise WrongBytes(f"small file: status {status}, body {body[:80]!r}")


def _checked(result: wrk.WrkResult, what: str) -> wrk.WrkResult:
    if result.non_2xx or result.requests == 0:
        raise WrongBytes(f"{what}: {result.non_2xx} error statuses of {result.requests}\n{result.text}")
    return result


def _cpu_figures(use: CpuUse, units: float, prefix: str, sides: Sides | None) -> dict[str, float]:
    if sides is None:
        return {}
    figures = per_unit(use, units, prefix)
    if use.server_s > 0:
        figures[f"{prefix}_per_core"] = units / use.server_s  # requests per second of one server core
    return figures


async def small(endpoint: Endpoint, sizes: Sizes, sides: Sides | None = None) -> dict[str, float]:
    """wrk over ``sizes.connections`` keep-alive connections; the body is checked once beforehand."""
    await check_small(endpoint)
    with CpuMeter(sides) as use:
        result = _checked(
            await wrk.run(endpoint, SMALL_PATH, connections=sizes.connections, seconds=sizes.wrk_seconds),
            "small requests",
        )
    return {
        "small_req_s": result.req_per_s,
        "small_p50_ms": result.p50_ms,
        "small_p99_ms": result.p99_ms,
        **_cpu_figures(use, result.requests, "small", sides),
    }


async def one_visitor(endpoint: Endpoint, sizes: Sizes) -> dict[str, float]:
    """One keep-alive connection, one request at a time: the latency a lone Lab user sees."""
    result = _checked(
        await wrk.run(endpoint, SMALL_PATH, connections=1, seconds=sizes.wrk_seconds / 2), "one visitor"
    )
    return {"one_p50_ms": result.p50_ms, "one_p99_ms": result.p99_ms}


async def new_connections(endpoint: Endpoint, sizes: Sizes, sides: Sides | None = None) -> dict[str, float]:
    """wrk with ``Connection: close``: one new visitor connection per request."""
    with CpuMeter(sides) as use:
        result = _checked(
            await wrk.run(
                endpoint,
                SMALL_PATH,
                connections=sizes.connections,
                seconds=sizes.wrk_seconds / 2,
                new_connections=True,
            ),
            "new connections",
        )
    return {"new_conn_s": result.req_per_s, **_cpu_figures(use, result.requests, "new_conn", sides)}


async def websocket(endpoint: Endpoint, sizes: Sizes, sides: Sides | None = None) -> dict[str, float]:
    """Round trips one at a time (latency), then many in flight (messages/s); every echo is checked."""
    headers = {"Host": endpoint.host, **endpoint.headers}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{endpoint.port}{WS_PATH}", headers=headers) as ws,
    ):
        rtts = []
        for i in range(sizes.ws_round_trips):
            payload = i.to_bytes(8, "big") * (WS_PAYLOAD // 8)
            started = time.perf_counter()
            await ws.send_bytes(payload)
            echo = await ws.receive_bytes(timeout=10)
            rtts.append((time.perf_counter() - started) * 1e3)
            if echo != payload:
                raise WrongBytes(f"WebSocket echo {echo[:16]!r} for {payload[:16]!r}")
        with CpuMeter(sides) as use:
            rate = await _ws_throughput(ws, sizes.ws_messages)
    rtts.sort()
    figures = {
        "ws_rtt_p50_ms": statistics.median(rtts),
        "ws_rtt_p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))],
        "ws_msg_s": rate,
    }
    if sides is not None:
        # Each echo is two messages through the tunnel: the one sent and its echo.
        figures.update(per_unit(use, 2 * sizes.ws_messages, "ws"))
    return figures


async def _ws_throughput(ws: aiohttp.ClientWebSocketResponse[bool], count: int) -> float:
    window = asyncio.Semaphore(WS_WINDOW)

    async def send() -> None:
        for i in range(count):
            await window.acquire()
            await ws.send_bytes(i.to_bytes(8, "big") * (WS_PAYLOAD // 8))

    started = time.perf_counter()
    sender = asyncio.create_task(send())
    try:
        for i in range(count):
            echo = await ws.receive_bytes(timeout=10)
            window.release()
            if echo != i.to_bytes(8, "big") * (WS_PAYLOAD // 8):
                raise WrongBytes(f"WebSocket echo {i} out of order or altered: {echo[:16]!r}")
        await sender
    finally:
        sender.cancel()
    return count / (time.perf_counter() - started)
