"""Memory per idle tunnel: the server's memory before and after N authenticated SSH connections that
each hold one ``-R`` forward and do nothing else.

The connections come from one asyncssh process (this module run as a script), since a thousand
OpenSSH clients would measure the machine rather than the server. The relay is one process, so its
RSS tells; sshd forks per connection, so its figure is the summed PSS of all its processes (pages
shared after the fork counted once).

    IDLE_TUNNELS_PASSWORD=TOKEN python -m tests.bench.idle_tunnels --port P --user U [--key FILE]
                                       --count N [--names PREFIX] --target PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .classic import CIPHER, start_sshd
from .processes import descendants, pss_kib, rss_kib

#: Handshakes in flight at once: enough to be quick, few enough not to trip any start-up limit.
CONCURRENT_LOGINS = 32
#: Seconds to let the server settle (lazy allocations, keepalive timers) before reading its memory.
SETTLE = 2.0
READY = "ready"
#: The password (a relay token) comes in the environment, never on a command line others can read.
PASSWORD_ENV = "IDLE_TUNNELS_PASSWORD"


async def _hold_one(
    args: argparse.Namespace, i: int, gate: asyncio.Semaphore
) -> asyncssh.SSHClientConnection:
    async with gate:
        conn = await asyncssh.connect(
            "127.0.0.1",
            args.port,
            username=args.user,
            password=os.environ.get(PASSWORD_ENV),
            client_keys=[args.key] if args.key else None,
            preferred_auth=["publickey"] if args.key else ["password"],
            known_hosts=None,  # a loopback measurement: nothing to authenticate the server against
            agent_path=None,
            config=[],
            encryption_algs=[CIPHER],
        )
        if args.names:
            await conn.forward_remote_port(f"{args.names}{i}", 80, "127.0.0.1", args.target)
        else:
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", args.target)
        return conn


async def hold(args: argparse.Namespace) -> None:
    gate = asyncio.Semaphore(CONCURRENT_LOGINS)
    conns = await asyncio.gather(*(_hold_one(args, i, gate) for i in range(args.count)))
    print(READY, len(conns), flush=True)
    # Hold everything until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for conn in conns:
        conn.close()
    for conn in conns:
        await conn.wait_closed()


@dataclass
class HeldTunnels:
    proc: asyncio.subprocess.Process

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except (asyncio.TimeoutError, TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def open_held(argv: list[str], password: str | None = None, timeout: float = 300) -> HeldTunnels:
    env = dict(os.environ)
    if password is not None:
        env[PASSWORD_ENV] = password
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.idle_tunnels",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    held = HeldTunnels(proc)
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line.startswith(READY.encode()):
        err = await proc.stderr.read()
        await held.close()
        raise RuntimeError(f"idle tunnels did not come up: {err.decode()[-2000:]}")
    return held


async def relay_kib_per_tunnel(
    relay_pid: int, argv: list[str], token: str, count: int, warm_up: int
) -> float:
    """RSS growth of the relay per tunnel, after a warm-up batch opened and closed (first-use
    allocations and imports are not per-tunnel costs)."""
    warm = await open_held([*argv, "--count", str(warm_up), "--names", "warm"], token)
    await warm.close()
    await asyncio.sleep(SETTLE)
    before = rss_kib(relay_pid)
    held = await open_held([*argv, "--count", str(count), "--names", "idle"], token)
    try:
        await asyncio.sleep(SETTLE)
        after = rss_kib(relay_pid)
    finally:
        await held.close()
    return (after - before) / count


def _pss_total(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += pss_kib(p)
    return total


async def sshd_kib_per_connection(work: Path, target: int, count: int) -> float:
    """Summed PSS growth of a fresh sshd and its per-connection processes, per connection."""
    sshd = await start_sshd(work)
    try:
        argv = [
            "--port",
            str(sshd.port),
            "--user",
            sshd.user,
            "--key",
            str(sshd.key),
            "--target",
            str(target),
        ]
        await asyncio.sleep(SETTLE)
        before = _pss_total(sshd.child.pid)
        held = await open_held([*argv, "--count", str(count)])
        try:
            await asyncio.sleep(SETTLE)
            after = _pss_total(sshd.child.pid)
        finally:
            await held.close()
    finally:
        sshd.stop()
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--names", help="tunnel name prefix (relay); without it, sshd binds a port")
    parser.add_argument("--target", type=int, required=True)
    asyncio.run(hold(parser.parse_args()))


if __name__ == "__main__":
    main()
