"""Debian's ``wrk``: many requests over keep-alive connections (or, with ``Connection: close``, one new
connection per request), its text report parsed into numbers."""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass

from .http_client import Endpoint

WRK = shutil.which("wrk") or "wrk"
#: wrk threads: one per core of the 2-core machine this was written for.
THREADS = 2
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class WrkResult:
    requests: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # wrk counts every status >= 400 here
    socket_errors: int
    text: str


def _ms(text: str, percentile: str) -> float:
    m = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if m is None:
        raise RuntimeError(f"no {percentile}% latency in wrk's report:\n{text}")
    return float(m[1]) * _UNITS[m[2]]


def parse(text: str) -> WrkResult:
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if rate is None or total is None:
        raise RuntimeError(f"cannot read wrk's report:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests=int(total[1]),
        req_per_s=float(rate[1]),
        p50_ms=_ms(text, "50"),
        p99_ms=_ms(text, "99"),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        text=text,
    )


async def run(
    endpoint: Endpoint, path: str, *, connections: int, seconds: float, new_connections: bool = False
) -> WrkResult:
    argv = [
        WRK,
        f"-t{min(THREADS, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Host: {endpoint.host}",
    ]
    for name, value in endpoint.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if new_connections:
        # wrk reconnects whenever the server closes: every request pays for a new connection.
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{endpoint.port}{path}")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    return parse(text)
