"""The cost of a cluster's one hop: small requests to a tunnel through the node that holds it, against
the same requests through another node of the cluster, which carries them one hop (DESIGN §3.9).

    python -m tests.bench.hop [--rounds N] [--seconds S]

Two nodes on one PostgreSQL that the benchmark starts, a stock ``ssh -tt -R`` tunnel held by node 1,
wrk through node 1 and through node 2 in turn, and for reference the same through a single relay on
its embedded SQLite store. The relay side's CPU counts both nodes (through node 2 both work on each
request). Prints one line per stack and round, then the medians and the ratios."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.harness import RelayProcess, ssh_args, start_relay
from tests.pgserver import PostgresServer

from . import workloads
from .backends import SMALL_BODY, SMALL_PATH, start_backend
from .classic import CIPHER
from .cpu import Sides
from .http_client import Endpoint, wait_working
from .processes import spawn

USER = "bench"
FIGURES = ("small_req_s", "small_p50_ms", "small_p99_ms", "small_cpu_us", "small_client_cpu_us")
STACKS = ("single relay (SQLite)", "owning node", "another node (one hop)")


def _node(work: Path, url: str, n: int) -> RelayProcess:
    data = work / f"n{n}"
    data.mkdir(mode=0o700)
    extra = ["--store", url, "--node", f"n{n}", "--cluster-address", "127.0.0.1:0"]
    return start_relay(data, extra=extra)


async def hop(rounds: int, seconds: float) -> dict[str, dict[str, list[float]]]:
    sizes = workloads.Sizes(wrk_seconds=seconds, connections=50, ws_round_trips=0, ws_messages=0)
    seen: dict[str, dict[str, list[float]]] = {s: {f: [] for f in FIGURES} for s in STACKS}
    with tempfile.TemporaryDirectory(prefix="relay-hop-") as tmp:
        work = Path(tmp)
        work.chmod(0o700)
        async with contextlib.AsyncExitStack() as cleanup:
            postgres = PostgresServer()
            postgres.start()
            cleanup.callback(postgres.stop)
            url = postgres.new_database()
            backend = await start_backend(work, 1 << 20)
            cleanup.callback(backend.stop)
            single_dir = work / "single"
            single_dir.mkdir(mode=0o700)
            single = start_relay(single_dir)
            nodes = [_node(work, url, 1), _node(work, url, 2)]
            for relay in (single, *nodes):
                cleanup.callback(relay.stop)
            stacks = []
            for relay, server in ((single, (single,)), (nodes[0], (nodes[0], nodes[1]))):
                token = relay.add_user(USER)  # the owner visits its own tunnel with its token
                argv, env = ssh_args(relay, USER, key=relay.add_key(USER))
                argv += ["-tt", "-o", f"Ciphers={CIPHER}", "-R", f"hop:80:127.0.0.1:{backend.port}"]
                child = spawn(
                    f"hop-{relay.http_port}",
                    [*argv, f"{USER}@127.0.0.1"],
                    work,
                    env=env,
                    stdin=subprocess.PIPE,
                )
                cleanup.callback(child.stop)
                sides = Sides(tuple(r.proc.pid for r in server), (child.pid,))
                for via in (relay,) if relay is single else nodes:
                    endpoint = Endpoint(
                        via.http_port, f"hop.localhost:{via.http_port}", {"X-Relay-Token": token}
                    )
                    await wait_working(endpoint, SMALL_PATH, SMALL_BODY)
                    stacks.append((endpoint, sides))
            order = list(zip(STACKS, stacks, strict=True))
            for r in range(rounds):
                for stack, (endpoint, sides) in order[r % 3 :] + order[: r % 3]:
                    figures = await workloads.small(endpoint, sizes, sides)
                    for f in FIGURES:
                        seen[stack][f].append(figures[f])
                    print(
                        f"round {r + 1} {stack:24} " + " ".join(f"{f}={figures[f]:,.1f}" for f in FIGURES),
                        flush=True,
                    )
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    seen = asyncio.run(hop(args.rounds, args.seconds))
    medians = {s: {f: statistics.median(v) for f, v in figures.items()} for s, figures in seen.items()}
    for stack, figures in medians.items():
        print(f"median {stack:24} " + " ".join(f"{f}={v:,.1f}" for f, v in figures.items()))
    single, owning, other = (medians[s] for s in STACKS)
    for label, a, b in (("hop/owning", other, owning), ("owning/single", owning, single)):
        print(
            f"{label}: req/s {a['small_req_s'] / b['small_req_s']:.2f}x, "
            f"p99 {a['small_p99_ms'] / b['small_p99_ms']:.2f}x, "
            f"relay CPU per request {a['small_cpu_us'] / b['small_cpu_us']:.2f}x"
        )


if __name__ == "__main__":
    main()
