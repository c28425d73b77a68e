"""A quick A/B probe of the request path: small requests only, classic against the relay, interleaved.

    python -m tests.bench.probe [--rounds N] [--seconds S] [--stacks classic,relay-ssh,relay-client]
    python -m tests.bench.probe --bulk MIB ...

Prints one line per stack and round (req/s, p99, server and client CPU µs per request; with
``--bulk``, MB/s of one download and MB per CPU-second of each side) and the medians. For checking a
speed change between two checkouts in minutes; the full run is ``run.py``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
from pathlib import Path

from . import workloads
from .backends import SMALL_BODY, SMALL_PATH, start_backend
from .http_client import Downloader
from .stacks import Stack, open_stack, start_servers

SMALL_FIGURES = ("small_req_s", "small_p99_ms", "small_cpu_us", "small_client_cpu_us")
BULK_FIGURES = ("bulk_mb_s", "bulk_mb_per_cpu_s", "bulk_mb_per_client_cpu_s")


async def probe(
    kinds: list[str], rounds: int, seconds: float, bulk_mib: int = 0
) -> dict[str, dict[str, list[float]]]:
    sizes = workloads.Sizes(wrk_seconds=seconds, connections=50, ws_round_trips=0, ws_messages=0)
    figures_of = BULK_FIGURES if bulk_mib else SMALL_FIGURES
    seen: dict[str, dict[str, list[float]]] = {k: {f: [] for f in figures_of} for k in kinds}
    with tempfile.TemporaryDirectory(prefix="relay-probe-") as tmp:
        work = Path(tmp)
        async with contextlib.AsyncExitStack() as cleanup:
            backend = await start_backend(work, (bulk_mib or 1) << 20)
            downloader = Downloader(bulk_mib << 20) if bulk_mib else None
            cleanup.callback(backend.stop)
            servers = await start_servers(work, cleanup)
            stacks: list[Stack] = []
            for kind in kinds:
                probe_path = (SMALL_PATH, SMALL_BODY)
                stacks.append(await open_stack(servers, kind, kind, backend.port, probe_path, cleanup))
            for r in range(rounds):
                for stack in stacks[r % len(stacks) :] + stacks[: r % len(stacks)]:
                    if downloader is not None:
                        figures = await workloads.bulk(stack.endpoint, backend.files, downloader, stack.sides)
                    else:
                        figures = await workloads.small(stack.endpoint, sizes, stack.sides)
                    for f in figures_of:
                        seen[stack.key][f].append(figures[f])
                    print(
                        f"round {r + 1} {stack.key:13} "
                        + " ".join(f"{f}={figures[f]:,.1f}" for f in figures_of),
                        flush=True,
                    )
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--stacks", default="classic,relay-ssh")
    parser.add_argument("--bulk", type=int, default=0, metavar="MIB", help="one download of MIB instead")
    args = parser.parse_args()
    seen = asyncio.run(probe(args.stacks.split(","), args.rounds, args.seconds, args.bulk))
    for kind, figures in seen.items():
        print(f"median {kind:13} " + " ".join(f"{f}={statistics.median(v):,.1f}" for f, v in figures.items()))


if __name__ == "__main__":
    main()
