"""What Prometheus metrics cost the hot path: two relays side by side, one with ``--metrics-bind`` and
one without, the same stock ``ssh -tt -R`` tunnel and wrk load on each, interleaved round by round.

    python -m tests.bench.metrics_ab [--rounds 8] [--seconds 5]

Prints each round's req/s and relay CPU µs per request for both, then the medians and the median of
the per-round ratios (on / off). Issue 13's budget: metrics on costs at most 3 % of small-request
throughput. The metrics listener is scraped once a second meanwhile, as Prometheus would (more often
than its usual 15 s)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import tempfile
from pathlib import Path

import aiohttp

from . import workloads
from .backends import SMALL_BODY, SMALL_PATH, start_backend
from .stacks import Servers, Stack, open_stack, start_servers


async def _scrape_forever(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as resp:
                await resp.read()
            await asyncio.sleep(1)


def _metrics_url(servers: Servers) -> str:
    found = re.search(r"metrics on (\S+:\d+)", "\n".join(servers.relay.output))
    assert found, servers.relay.output
    return f"http://{found[1].rstrip(',')}/metrics"


async def compare(rounds: int, seconds: float) -> dict[str, dict[str, list[float]]]:
    sizes = workloads.Sizes(wrk_seconds=seconds, connections=50, ws_round_trips=0, ws_messages=0)
    figures = ("small_req_s", "small_cpu_us")
    seen: dict[str, dict[str, list[float]]] = {k: {f: [] for f in figures} for k in ("off", "on")}
    with tempfile.TemporaryDirectory(prefix="relay-metrics-ab-") as tmp:
        work = Path(tmp)
        async with contextlib.AsyncExitStack() as cleanup:
            backend = await start_backend(work, 1 << 20)
            cleanup.callback(backend.stop)
            stacks: dict[str, Stack] = {}
            for key, extra in (("off", []), ("on", ["--metrics-bind", "127.0.0.1:0"])):
                (work / key).mkdir()
                servers = await start_servers(work / key, cleanup, relay_extra=extra)
                stacks[key] = await open_stack(
                    servers, "relay-ssh", f"ab{key}", backend.port, (SMALL_PATH, SMALL_BODY), cleanup
                )
                if key == "on":
                    scraper = asyncio.ensure_future(_scrape_forever(_metrics_url(servers)))
                    cleanup.callback(scraper.cancel)
            order = ["off", "on"]
            for r in range(rounds):
                for key in order if r % 2 == 0 else order[::-1]:
                    got = await workloads.small(stacks[key].endpoint, sizes, stacks[key].sides)
                    for f in figures:
                        seen[key][f].append(got[f])
                    print(f"round {r + 1} metrics {key:3} " + " ".join(f"{f}={got[f]:,.1f}" for f in figures))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    seen = asyncio.run(compare(args.rounds, args.seconds))
    for key, figures in seen.items():
        print(
            f"median metrics {key:3} "
            + " ".join(f"{f}={statistics.median(v):,.1f}" for f, v in figures.items())
        )
    for f in ("small_req_s", "small_cpu_us"):
        ratios = [on / off for on, off in zip(seen["on"][f], seen["off"][f], strict=True)]
        spread = f"min {min(ratios):.3f}, max {max(ratios):.3f}"
        print(f"ratio on/off {f}: median {statistics.median(ratios):.3f} ({spread})")


if __name__ == "__main__":
    main()
