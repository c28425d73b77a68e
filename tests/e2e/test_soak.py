"""A bounded soak: many tunnels under load, clients killed (cleanly and by vanishing), the relay
restarted in the middle, and an attacker racing for names in the gap.

Asserts that no name was lost or taken, no response crossed users, failures during the chaos were
clean (an error status or a closed connection, never a wrong or silently short 200), and the relay's
memory came back to its level. Prints request latencies and memory figures.

``RELAY_SOAK_SECONDS`` (default 40) and ``RELAY_SOAK_TUNNELS`` (default 50) make it longer or wider
for local runs, e.g. ``RELAY_SOAK_SECONDS=600 pytest tests/e2e/test_soak.py -s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncssh
import pytest
from aiohttp import web

from relay.datadir import HOST_KEY_FILE

from .harness import RelayProcess, limit_args, relay_rss_kib, ssh_args, start_relay

SOAK_SECONDS = float(os.environ.get("RELAY_SOAK_SECONDS", "40"))
TUNNELS = int(os.environ.get("RELAY_SOAK_TUNNELS", "50"))
WORKERS = 8
LIMITS = {
    "ssh_keepalive_interval": "1",
    "ssh_keepalive_count": "2",
    "shutdown_grace": "5",
    "upstream_response_timeout": "10",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Soak:
    workdir: Path
    http_port: int
    ssh_port: int
    relay: RelayProcess
    names: list[str]
    tokens: list[str]
    backend_ports: list[int]
    procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)

    def host(self, i: int) -> str:
        return f"{self.names[i]}.localhost"


async def start_backends(count: int) -> tuple[web.AppRunner, list[int]]:
    """One aiohttp app on ``count`` ports; each answers with the index of its port (its user)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        socks.append(sock)
    ports = [int(s.getsockname()[1]) for s in socks]
    owner = {port: i for i, port in enumerate(ports)}

    async def handle(request: web.Request) -> web.Response:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else -1
        delay = float(request.query.get("ms", "0")) / 1000
        if delay:
            await asyncio.sleep(delay)
        doc = {"user": owner[port], "host": request.headers.get("X-Forwarded-Host"), "pad": "x" * 2000}
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for sock in socks:
        await web.SockSite(runner, sock).start()
    return runner, ports


def write_known_hosts(soak: Soak) -> None:
    key = asyncssh.read_private_key(soak.relay.data_dir / HOST_KEY_FILE)
    line = f"[127.0.0.1]:{soak.ssh_port} {key.export_public_key().decode().strip()}\n"
    (soak.workdir / "known_hosts").write_text(line)


def tunnel_argv(
    soak: Soak, name: str, token: str, port: int, bind: str | None = None
) -> tuple[list[str], dict[str, str]]:
    args, env = ssh_args(soak.relay, name, token=token)
    args = [a if a != "StrictHostKeyChecking=accept-new" else "StrictHostKeyChecking=yes" for a in args]
    args += ["-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{bind or name}:80:127.0.0.1:{port}"]
    return [*args, f"{name}@127.0.0.1"], env


async def keep_connected(soak: Soak, i: int) -> None:
    """A client that reconnects, as relay-client does: restart ``ssh -R`` whenever it exits."""
    argv, env = tunnel_argv(soak, soak.names[i], soak.tokens[i], soak.backend_ports[i])
    while not soak.stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        soak.procs[i] = proc
        await proc.wait()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(soak.stop.wait(), 0.3 + random.random() * 0.3)


async def get(
    session: aiohttp.ClientSession, soak: Soak, host: str, token: str, path: str = "/"
) -> tuple[int, dict[str, object] | None]:
    async with session.get(
        f"http://127.0.0.1:{soak.http_port}{path}",
        headers={"Host": host, "X-Relay-Token": token},
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=20),
    ) as resp:
        body = await resp.read()
        if resp.status != 200:
            return resp.status, None
        return 200, json.loads(body)


async def all_up(soak: Soak, timeout: float = 60) -> float:
    """Wait until every tunnel answers for its own user; returns the seconds it took."""
    started = time.monotonic()
    pending = set(range(len(soak.names)))
    async with aiohttp.ClientSession() as session:
        while pending and time.monotonic() - started < timeout:
            for i in list(pending):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    status, doc = await get(session, soak, soak.host(i), soak.tokens[i])
                    if status == 200 and doc is not None and doc["user"] == i:
                        pending.discard(i)
            if pending:
                await asyncio.sleep(0.2)
    assert not pending, f"tunnels not back: {sorted(soak.names[i] for i in pending)}"
    return time.monotonic() - started


async def visitor(soak: Soak, running: asyncio.Event) -> None:
    """Keep-alive requests to random tunnels (one connection carries many hosts, as behind Caddy),
    a few slow ones (in flight across kills and the restart) and cross-user probes."""
    rng = random.Random()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        while running.is_set():
            i = rng.randrange(len(soak.names))
            probe = rng.random() < 0.05
            token = soak.tokens[(i + 1) % len(soak.names)] if probe else soak.tokens[i]
            slow = rng.random() < 0.05
            path = "/slow?ms=400" if slow else f"/r{rng.randrange(10**6)}"
            started = time.monotonic()
            try:
                status, doc = await get(session, soak, soak.host(i), token, path)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                soak.outcomes["closed mid-response"] += 1  # clean: never a short body as complete
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                soak.outcomes[f"connection: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
            if probe:
                soak.outcomes[f"probe {status}"] += 1
                if status == 200:
                    soak.crossed.append(f"user {(i + 1) % len(soak.names)} read {soak.names[i]}")
                continue
            soak.outcomes[str(status)] += 1
            if status == 200:
                assert doc is not None
                if not slow:
                    soak.latencies.append(time.monotonic() - started)
                if doc["user"] != i or doc["host"] != soak.host(i):
                    soak.crossed.append(f"{soak.host(i)} answered {doc['user']}/{doc['host']}")
            else:
                await asyncio.sleep(0.02)


def kill_some(soak: Soak, count: int, sig: int) -> list[int]:
    victims = random.sample(sorted(soak.procs), count)
    for i in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(soak.procs[i].pid, sig)
    return victims


async def vanish_some(soak: Soak, count: int) -> None:
    """Clients that stop answering without closing TCP (SIGSTOP), then die for good."""
    victims = kill_some(soak, count, signal.SIGSTOP)
    await asyncio.sleep(3)  # longer than the keepalive window (1 s × 2)
    for i in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(soak.procs[i].pid, signal.SIGKILL)


async def attack_names(soak: Soak, mallory_token: str, victims: list[int]) -> list[int | None]:
    """Another user asks for the victims' names the moment the restarted relay is up."""

    async def one(i: int) -> int | None:
        argv, env = tunnel_argv(soak, "mallory", mallory_token, 9, bind=soak.names[i])
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        try:
            return await asyncio.wait_for(proc.wait(), 15)
        except (asyncio.TimeoutError, TimeoutError):
            proc.kill()
            await proc.wait()
            return None  # still connected: its forward was accepted

    return list(await asyncio.gather(*(one(i) for i in victims)))


#: Heads the relay must refuse; the attacker sends them beside the normal load.
CRAFTED = [
    b"GET / HTTP/1.1\nHost: soak0.localhost\n\n",  # bare LF: 400 at once
    b"GET http://[::1/x HTTP/1.1\r\nHost: [::1]\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: soak0.localhost\r\nTransfer-Encoding: chunked\xa0\r\n\r\n",
    b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: soak0.localhost\r\n\r\n",
]


async def attacker(soak: Soak, running: asyncio.Event, mallory_token: str) -> Counter[str]:
    """Beside the load: idle sockets from twenty addresses of one /24 (slowloris), crafted heads, a
    sign-in storm by mallory, and mallory's SSH connection asking for other users' names."""
    seen: Counter[str] = Counter()
    held: list[asyncio.StreamWriter] = []
    ssh: asyncssh.SSHClientConnection | None = None
    login = f"token={mallory_token}".encode()
    try:
        while running.is_set():
            held = [w for w in held if not w.is_closing()]
            for n in range(2, 22):  # keep 3 idle sockets per address (the relay cuts them in time)
                if len(held) >= 60:
                    break
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1", soak.http_port, local_addr=(f"127.0.99.{n}", 0)
                    )
                    held.append(writer)
            for data in [
                *CRAFTED,
                b"POST /_relay/login HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(login), login),
            ]:
                seen[await _exchange(soak, data)] += 1
            ssh = await _refuse_forwards(soak, ssh, mallory_token, seen)
            await asyncio.sleep(0.3)
    finally:
        for writer in held:
            writer.close()
        if ssh is not None:
            ssh.close()
    return seen


async def _exchange(soak: Soak, data: bytes) -> str:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", soak.http_port, local_addr=("127.0.98.2", 0)
        )
    except OSError:
        return "connect failed"
    try:
        writer.write(data)
        line = await asyncio.wait_for(reader.readline(), 10)
        return line.split(b" ")[1].decode() if line.startswith(b"HTTP/1.1 ") else "closed"
    except (OSError, asyncio.TimeoutError, TimeoutError):
        return "closed"
    finally:
        writer.close()


async def _refuse_forwards(
    soak: Soak, ssh: asyncssh.SSHClientConnection | None, token: str, seen: Counter[str]
) -> asyncssh.SSHClientConnection | None:
    """Mallory asks for names other users own, on one connection (reconnected after a restart)."""
    try:
        if ssh is None or ssh.is_closed():
            ssh = await asyncssh.connect(
                "127.0.0.1",
                soak.ssh_port,
                username="mallory",
                password=token,
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                preferred_auth="password",
                connect_timeout=10,
            )
        for name in random.sample(soak.names, 5):
            try:
                await ssh.forward_remote_port(name, 80, "127.0.0.1", 9)
                seen["forward taken"] += 1
            except asyncssh.ChannelListenError:
                seen["forward refused"] += 1
    except (OSError, asyncssh.Error):
        seen["ssh failed"] += 1
        return None
    return ssh


async def test_soak(tmp_path: Path) -> None:
    workdir = tmp_path
    workdir.chmod(0o700)
    http_port, ssh_port = free_port(), free_port()
    extra = limit_args(LIMITS)
    relay = start_relay(workdir, extra=extra, http_port=http_port, ssh_port=ssh_port)
    runner, ports = await start_backends(TUNNELS)
    names = [f"soak{i}" for i in range(TUNNELS)]
    store = relay.store()
    tokens = []
    try:
        for name in [*names, "mallory"]:
            store.add_user(name)
            tokens.append(store.create_token(name, label="soak")[1])
    finally:
        store.close()
    mallory_token = tokens.pop()
    soak = Soak(workdir, http_port, ssh_port, relay, names, tokens, ports)
    write_known_hosts(soak)
    clients = [asyncio.ensure_future(keep_connected(soak, i)) for i in range(TUNNELS)]
    running = asyncio.Event()
    load: list[asyncio.Task[None]] = []
    attack: asyncio.Future[Counter[str]] = asyncio.get_running_loop().create_future()
    attack.set_result(Counter())
    report: dict[str, object] = {}
    try:
        report["first all up s"] = round(await all_up(soak), 2)
        running.set()
        load = [asyncio.ensure_future(visitor(soak, running)) for _ in range(WORKERS)]
        attack = asyncio.ensure_future(attacker(soak, running, mallory_token))
        phase = SOAK_SECONDS / 10

        await asyncio.sleep(phase)
        kill_some(soak, max(1, TUNNELS // 10), signal.SIGKILL)  # clients killed, TCP closed
        await asyncio.sleep(phase)
        await vanish_some(soak, max(1, TUNNELS // 20))  # clients gone without closing TCP

        # Restart under load: SIGTERM lets in-flight requests finish, then a new process.
        victims = random.sample(range(TUNNELS), min(10, TUNNELS))
        # (In threads, so the visitors and clients keep running through the gap.)
        assert await asyncio.to_thread(relay.stop) == 0
        relay = await asyncio.to_thread(
            start_relay, workdir, extra=extra, http_port=http_port, ssh_port=ssh_port
        )
        soak.relay = relay
        attacks = await attack_names(soak, mallory_token, victims)
        report["back after restart s"] = round(await all_up(soak), 2)
        assert all(code not in (None, 0) for code in attacks), attacks

        # Memory baseline: load has warmed the new process; measure it idle.
        await asyncio.sleep(phase)
        running.clear()
        await asyncio.gather(*load)
        attacked = await attack
        await asyncio.sleep(1)
        baseline = relay_rss_kib(relay)
        running.set()
        load = [asyncio.ensure_future(visitor(soak, running)) for _ in range(WORKERS)]
        attack = asyncio.ensure_future(attacker(soak, running, mallory_token))
        requests_before = sum(soak.outcomes.values())

        remaining = SOAK_SECONDS - 3 * phase
        await asyncio.sleep(remaining / 3)
        kill_some(soak, max(1, TUNNELS // 10), signal.SIGKILL)
        await asyncio.sleep(remaining / 3)
        await vanish_some(soak, max(1, TUNNELS // 20))
        await asyncio.sleep(max(0.0, remaining / 3 - 3))

        running.clear()
        await asyncio.gather(*load)
        attacked += await attack
        report["back at the end s"] = round(await all_up(soak), 2)
        await asyncio.sleep(1)
        after = relay_rss_kib(relay)

        lat = sorted(soak.latencies)
        report.update(
            {
                "tunnels": TUNNELS,
                "seconds": SOAK_SECONDS,
                "requests": sum(soak.outcomes.values()),
                "requests after baseline": sum(soak.outcomes.values()) - requests_before,
                "outcomes": dict(soak.outcomes),
                "latency p50 ms": round(statistics.median(lat) * 1000, 1),
                "latency p99 ms": round(lat[int(len(lat) * 0.99)] * 1000, 1),
                "rss baseline MiB": round(baseline / 1024, 1),
                "rss after MiB": round(after / 1024, 1),
                "attacker": dict(attacked),
            }
        )
        print("\nsoak:", json.dumps(report, indent=1))

        assert soak.crossed == []
        # The attacker was contained: crafted heads refused, sign-ins bounded, no name taken.
        assert attacked["forward taken"] == 0 and attacked["forward refused"] > 0
        assert set(attacked) <= {
            "400",
            "303",
            "closed",
            "connect failed",
            "forward refused",
            "ssh failed",
            "429",
        }
        assert attacked["400"] >= len(CRAFTED)
        # Every name still belongs to its user; mallory holds none.
        store = relay.store()
        try:
            for name in names:
                owner = store.name_owner(name)
                assert owner is not None and owner == store.get_user(name).id, name
            assert [n for n, _ in store.list_names("mallory")] == ["mallory"]
        finally:
            store.close()
        # Clean failures only, and most requests served.
        allowed = {"200", "502", "503", "504", "probe 403", "probe 502", "probe 503", "closed mid-response"}
        unexpected = {
            k: v for k, v in soak.outcomes.items() if k not in allowed and not k.startswith("connection")
        }
        assert unexpected == {}
        assert soak.outcomes["200"] > 0.8 * sum(soak.outcomes.values())
        # Memory came back to its level (a leak of 2 KiB per request would exceed this in the
        # default run of ~7,500 requests after the baseline), and nothing failed inside the relay.
        assert after - baseline < 8 * 1024, (baseline, after)
        assert "Traceback" not in relay.log_text()
    finally:
        running.clear()
        soak.stop.set()
        for proc in soak.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await asyncio.gather(*clients, *load, attack, return_exceptions=True)
        await runner.cleanup()
        relay.stop()


pytestmark = pytest.mark.timeout(max(300, int(SOAK_SECONDS * 4)))
