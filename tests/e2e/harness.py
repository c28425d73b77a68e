"""One harness for end-to-end tests: a real ``relay serve`` process, a real OpenSSH client, and a
small aiohttp backend, all on 127.0.0.1 with free ports (chisel's testLayout idea)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

from aiohttp import WSMsgType, web

from relay.datadir import recorded_store
from relay.store import Store
from tests.pgserver import shared_server

SSH = shutil.which("ssh") or "ssh"
#: Debian's Chromium, driven by Playwright (it never downloads a browser), and the flags it needs
#: headless in a container with no side traffic: the browser test and the benchmark's Lab load.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@dataclass
class RelayProcess:
    """A running ``relay serve``; ports and the first admin token parsed from its output."""

    proc: subprocess.Popen[str]
    data_dir: Path
    http_port: int
    ssh_port: int
    admin_token: str
    fingerprint: str
    output: list[str]
    workdir: Path
    log: IO[str]
    address: str = "127.0.0.1"  # where it listens (a cluster's nodes: 127.0.0.11, .12, ...)

    @property
    def base(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    def url(self, name: str) -> str:
        return f"http://{name}.localhost:{self.http_port}"

    def add_user(self, name: str) -> str:
        """Create a user through the real CLI; returns the token."""
        out = subprocess.run(
            [sys.executable, "-m", "relay", "user", "add", name, "--json", "--data-dir", str(self.data_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        return str(json.loads(out.stdout)["token"])

    def add_key(self, user: str) -> Path:
        """Generate an ed25519 key pair, register its public half for ``user``; returns the private key."""
        key = self.workdir / f"id_{user}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "relay",
                "key",
                "add",
                user,
                f"{key}.pub",
                "--data-dir",
                str(self.data_dir),
            ],
            check=True,
            capture_output=True,
        )
        return key

    def store(self) -> Store:
        return Store.at(self.data_dir, store_url_for(self.data_dir) or recorded_store(self.data_dir))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.output += self.proc.stdout.read().splitlines()
            self.proc.stdout.close()
        if not self.log.closed:
            self.log.close()
        return code

    def log_text(self) -> str:
        return (self.workdir / "relay.log").read_text()


#: ``RELAY_TEST_STORE=postgresql``: every relay these tests start is a cluster node on its own
#: database of a real PostgreSQL (.ci/run reruns a set of end-to-end tests so); the admin commands
#: the tests run with its --data-dir find that database as an operator's would (DATA_DIR/store.url).
POSTGRES_MODE = os.environ.get("RELAY_TEST_STORE") == "postgresql"
_databases: dict[Path, str] = {}


def store_url_for(data_dir: Path) -> str | None:
    """The database of the relay on ``data_dir`` (made on first use) in PostgreSQL mode, else None."""
    if not POSTGRES_MODE:
        return None
    if data_dir not in _databases:
        _databases[data_dir] = shared_server().new_database()
    return _databases[data_dir]


def serve_argv(
    data_dir: Path,
    *,
    http_port: int = 0,
    ssh_port: int = 0,
    extra: list[str] | None = None,
    bind: str = "127.0.0.1",
) -> list[str]:
    """``relay serve`` on 127.0.0.1 with the given ports (0: any free one) and data dir."""
    url = store_url_for(data_dir)
    cluster = ["--store", url, "--node", "n1", "--cluster-address", "127.0.0.1:0"] if url else []
    return [
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--bind",
        bind,
        "--http-port",
        str(http_port),
        "--ssh-port",
        str(ssh_port),
        "--data-dir",
        str(data_dir),
        *cluster,
        *(extra or []),
    ]


def limit_args(limits: dict[str, str]) -> list[str]:
    """``--limit NAME=VALUE`` arguments for ``relay serve``."""
    return [arg for name, value in limits.items() for arg in ("--limit", f"{name}={value}")]


def start_relay(
    workdir: Path,
    *,
    data_dir: Path | None = None,
    extra: list[str] | None = None,
    http_port: int = 0,
    ssh_port: int = 0,
    bind: str = "127.0.0.1",
) -> RelayProcess:
    data_dir = data_dir or workdir / "data"
    cmd = serve_argv(data_dir, http_port=http_port, ssh_port=ssh_port, extra=extra, bind=bind)
    log = open(workdir / "relay.log", "a")  # noqa: SIM115 - kept open for the process's life
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    http_port = ssh_port = 0
    fingerprint = ""
    token = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if m := re.search(r"HTTP on [\d.]+:(\d+), SSH on [\d.]+:(\d+)", line):
            http_port, ssh_port = int(m[1]), int(m[2])
        if m := re.search(r"fingerprint (SHA256:\S+)", line):
            fingerprint = m[1]
        if m := re.match(r"\s+(rly_\S+)$", line):
            token = m[1]
        if line.startswith("relay: ready"):
            break
    if not http_port:
        proc.kill()
        raise RuntimeError("relay did not start:\n" + "\n".join(lines) + (workdir / "relay.log").read_text())
    return RelayProcess(proc, data_dir, http_port, ssh_port, token, fingerprint, lines, workdir, log, bind)


@dataclass
class SshTunnel:
    proc: asyncio.subprocess.Process
    stdout_lines: list[str] = field(default_factory=list)
    stderr: str = ""

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()


def ssh_args(
    relay: RelayProcess, user: str, *, token: str | None = None, key: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment for a real OpenSSH client logging in with a key or a token."""
    env = dict(os.environ)
    args = [
        SSH,
        "-p",
        str(relay.ssh_port),
        "-o",
        f"UserKnownHostsFile={relay.workdir / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "LogLevel=INFO",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ConnectTimeout=10",
        "-F",
        "/dev/null",
    ]
    if key is not None:
        args += [
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "BatchMode=yes",
        ]
    else:
        assert token is not None
        askpass = relay.workdir / f"askpass-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
        askpass.write_text(f"#!/bin/sh\necho '{token}'\n")
        askpass.chmod(0o700)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        args += ["-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"]
    return args, env


async def open_tunnel(
    relay: RelayProcess,
    user: str,
    spec: str,
    *,
    token: str | None = None,
    key: Path | None = None,
    expect_url: bool = True,
    extra: list[str] | None = None,
) -> SshTunnel:
    """``ssh -R SPEC user@relay`` (a session without -N, so the relay prints the URL); waits for it."""
    args, env = ssh_args(relay, user, token=token, key=key)
    args += [*(extra or []), "-R", spec, f"{user}@{relay.address}"]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    tunnel = SshTunnel(proc)
    assert proc.stdout is not None and proc.stderr is not None
    if expect_url:
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        if not line:
            err = await proc.stderr.read()
            raise AssertionError(f"ssh printed no URL; stderr: {err.decode()}")
        tunnel.stdout_lines.append(line.decode().strip())
    return tunnel


async def ssh_exec(
    relay: RelayProcess,
    user: str,
    command: list[str],
    *,
    token: str | None = None,
    key: Path | None = None,
    extra: list[str] | None = None,
) -> tuple[int, str, str]:
    args, env = ssh_args(relay, user, token=token, key=key)
    proc = await asyncio.create_subprocess_exec(
        *args,
        *(extra or []),
        f"{user}@{relay.address}",
        "--",
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- the backend ------------------------------------------------------------------------------------


def pattern_bytes(size: int, seed: int = 7) -> AsyncIterator[bytes]:
    """Deterministic pseudo-random bytes, produced in 64 KiB pieces (never all in memory)."""

    async def gen() -> AsyncIterator[bytes]:
        block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            sent += len(piece)
            yield piece

    return gen()


def pattern_sha256(size: int, seed: int = 7) -> str:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        digest.update(piece)
        sent += len(piece)
    return digest.hexdigest()


@dataclass
class Backend:
    """An aiohttp app standing in for JupyterLab: it records every request it sees."""

    port: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/download", self.download)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/set-cookies", self.set_cookies)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/site-wide", self.site_wide)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    def record(self, request: web.Request) -> None:
        self.seen.append(
            {"method": request.method, "path": request.path_qs, "headers": dict(request.headers)}
        )

    async def echo(self, request: web.Request) -> web.Response:
        self.record(request)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "cookies": dict(request.cookies),
                "body": body.decode(errors="replace"),
            }
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        size = int(request.query["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        async for piece in pattern_bytes(size):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        self.record(request)
        digest = hashlib.sha256()
        length = 0
        async for piece in request.content.iter_chunked(65536):
            digest.update(piece)
            length += len(piece)
        return web.json_response({"sha256": digest.hexdigest(), "length": length})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.record(request)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def set_cookies(self, request: web.Request) -> web.Response:
        self.record(request)
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", "app=1; Path=/")
        resp.headers.add("Set-Cookie", "relay_session=evil; Path=/")
        resp.headers.add("Set-Cookie", "__Host-relay_session=evil; Path=/; Secure")
        resp.headers.add("Set-Cookie", "wide=1; Domain=localhost; Path=/")
        return resp

    async def site_wide(self, request: web.Request) -> web.Response:
        """A header that would act on every host of the relay's domain, and one that is harmless."""
        self.record(request)
        return web.Response(text="ok", headers={"Clear-Site-Data": '"cookies", "storage"', "X-Kept": "1"})

    async def slow(self, request: web.Request) -> web.StreamResponse:
        """Ten pieces, ``delay`` seconds apart: a request that is in flight for a while."""
        self.record(request)
        delay = float(request.query.get("delay", "0.2"))
        resp = web.StreamResponse()
        resp.content_length = 10 * 1000
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"s" * 1000)
            await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(
    relay: RelayProcess,
    host: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Reply:
    """One request to the relay's HTTP port with an explicit Host; no redirects, no cookie jar."""
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as session:
        async with session.request(
            method,
            f"{relay.base}{path}",
            headers={"Host": host, **(headers or {})},
            data=data,
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            return Reply(
                resp.status,
                {k: v for k, v in resp.headers.items()},
                resp.headers.getall("Set-Cookie", []),
                body,
            )


async def raw_request(port: int, data: bytes, *, read_timeout: float = 10) -> bytes:
    """Send raw bytes to the relay and read until it closes (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (asyncio.TimeoutError, TimeoutError):
        pass
    writer.close()
    return b"".join(chunks)


async def sign_in(relay: RelayProcess, host: str, token: str) -> tuple[str, str, Reply]:
    """A fresh browser opens ``host``, is sent to the login origin and signs in there with ``token``:
    (its state cookie on ``host``, the hand-off code or "" if none was minted, the login's reply)."""
    first = await fetch(relay, host, "/echo", headers={"Accept": "text/html"})
    state_cookie = cookie_pair(first.set_cookies[0])
    params = parse_qs(urlsplit(first.headers["Location"]).query)
    posted = await fetch(
        relay,
        "localhost",
        "/_relay/login",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=f"token={quote(token)}&next={quote(params['next'][0])}&state={params['state'][0]}".encode(),
    )
    code = parse_qs(urlsplit(posted.headers.get("Location", "")).query).get("code", [""])[0]
    return state_cookie, code, posted


def cookie_pair(set_cookie: str) -> str:
    """``name=value`` from a Set-Cookie header, to send back in Cookie."""
    return set_cookie.split(";", 1)[0]


@dataclass
class ClientProcess:
    """A running ``relay-client connect``; ``url`` is the line it printed."""

    proc: asyncio.subprocess.Process
    url: str
    home: Path

    async def stderr_until(self, text: str, timeout: float = 30) -> str:
        """Read the client's status lines until one contains ``text``; returns what was read."""
        assert self.proc.stderr is not None
        seen = ""

        async def scan() -> str:
            nonlocal seen
            while True:
                line = await self.proc.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError(f"client ended before {text!r}; it said:\n{seen}")
                seen += line.decode()
                if text in line.decode():
                    return seen

        return await asyncio.wait_for(scan(), timeout)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except (asyncio.TimeoutError, TimeoutError):
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode


def client_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_CLIENT_HOME"] = str(home)
    env["JUPYTER_CONFIG_DIR"] = str(home / "jupyter-config")
    env["JUPYTER_DATA_DIR"] = str(home / "jupyter-data")
    env["JUPYTER_RUNTIME_DIR"] = str(home / "jupyter-runtime")
    env["IPYTHONDIR"] = str(home / "ipython")
    return env


def client_argv(ssh_port: int, args: list[str], address: str = "127.0.0.1") -> list[str]:
    """``relay-client connect --relay ADDRESS:SSH_PORT ARGS`` (a later --relay in ARGS wins)."""
    return [sys.executable, "-m", "client", "connect", "--relay", f"{address}:{ssh_port}", *args]


async def start_client(
    relay: RelayProcess,
    home: Path,
    args: list[str],
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> ClientProcess:
    """``relay-client connect ARGS --relay 127.0.0.1:SSH_PORT``; waits for the printed URL. ``env``
    adds to the client's environment (e.g. ``RELAY_TOKEN``); ``prefix`` runs it under a command."""
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        *client_argv(relay.ssh_port, args, relay.address),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**client_env(home), **(env or {})},
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        err = await proc.stderr.read()
        await proc.wait()
        raise AssertionError(f"relay-client printed no URL (exit {proc.returncode}): {err.decode()}")
    return ClientProcess(proc, line.decode().strip(), home)


async def run_client_once(ssh_port: int, home: Path, args: list[str]) -> tuple[int, bytes, bytes]:
    """``relay-client connect`` expected to end by itself (an error): (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *client_argv(ssh_port, args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=client_env(home),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err


# -- hostile parts ----------------------------------------------------------------------------------


#: The unasked-for second response of HostileBackend's keep-open actions.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
SMUGGLED_AFTER = {
    "extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",  # bytes past Content-Length
    "head-body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",  # a body after HEAD
    "no-content": b"HTTP/1.1 204 No Content\r\n\r\n",  # a "body" after 204
    "switch": b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
}


@dataclass
class HostileBackend:
    """A raw-socket backend that misbehaves on purpose; the request path picks how.

    ``/ok`` answers properly (keep-alive); ``/never`` never answers; ``/garbage`` sends no HTTP;
    ``/big-head`` a 200 KB response head; ``/cl-te`` and ``/dup-cl`` conflicting framing;
    ``/truncate`` dies mid-body; ``/hangup`` closes after reading the request; ``/stall-body`` sends
    its head and a little of its body, then nothing. The ``-small`` forms do the same with a body
    small enough for the relay to send whole with its head. Every request is recorded with the number of
    the backend connection (one per SSH channel) that carried it.
    """

    port: int = 0
    requests: list[tuple[int, str]] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def paths(self) -> list[str]:
        return [path for _, path in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                path = head.split(b" ", 2)[1].decode()
                if m := re.search(rb"(?i)\r\ncontent-length: *(\d+)", head):
                    await reader.readexactly(int(m[1]))
                self.requests.append((number, path))
                action = path.lstrip("/").partition("?")[0]
                if action == "ok":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                if action in SMUGGLED_AFTER:
                    # A whole answer, then a second one nobody asked for, and the connection kept:
                    # a relay that reuses this channel would give the second to the next request.
                    writer.write(SMUGGLED_AFTER[action] + SMUGGLED)
                    await writer.drain()
                    continue
                if action == "never":
                    await asyncio.sleep(3600)
                elif action == "garbage":
                    writer.write(b"SSH-2.0-OpenSSH_9.2\r\nthis is not http\r\n\r\n")
                elif action == "big-head":
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
                elif action == "cl-te":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                    )
                elif action == "dup-cl":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\nok")
                elif action == "truncate":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"t" * 1000)
                elif action == "truncate-small":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"t" * 10)
                elif action in ("stall-body", "stall-small"):
                    size = 100_000 if action == "stall-body" else 1000
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"s" * 10)
                    await writer.drain()
                    await asyncio.sleep(3600)
                await writer.drain()
                return  # "hangup" and everything after a broken answer: close the connection
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def connect_from(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to the relay from ``source`` (any 127.x address works on Linux loopback)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[bytes, bool]:
    """Everything the relay sends until it closes; (data, closed) with closed False on timeout."""
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            chunks.append(chunk)
    except (asyncio.TimeoutError, TimeoutError):
        return b"".join(chunks), False
    except ConnectionError:
        pass
    return b"".join(chunks), True


def relay_rss_kib(relay: RelayProcess) -> int:
    """Resident memory of the relay process, KiB (Linux /proc)."""
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class CookieBrowser:
    """A browser's redirects and host-only cookies, over :func:`fetch` (paths of cookies ignored):
    enough to walk the relay's sign-in and share-link hand-offs the way a browser does."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay
        self.jar: dict[str, dict[str, str]] = {}
        self.visited: list[tuple[str, Reply]] = []  # every (URL, reply) on the way

    def cookies(self, host: str) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.jar.get(host, {}).items())

    async def get(self, url: str, *, headers: dict[str, str] | None = None, hops: int = 10) -> Reply:
        """GET ``url``, following redirects; the last reply (its URL is ``self.visited[-1][0]``)."""
        for _ in range(hops):
            parts = urlsplit(url)
            host = parts.hostname or ""
            sent = {"Accept": "text/html", **(headers or {})}
            if self.jar.get(host):
                sent["Cookie"] = self.cookies(host)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            reply = await fetch(self.relay, host, target, headers=sent)
            self.visited.append((url, reply))
            for set_cookie in reply.set_cookies:
                name, _, value = cookie_pair(set_cookie).partition("=")
                if "max-age=0" in set_cookie.lower():
                    self.jar.get(host, {}).pop(name, None)
                else:
                    self.jar.setdefault(host, {})[name] = value
            if reply.status not in (301, 302, 303, 307, 308):
                return reply
            url = urljoin(url, reply.headers["Location"])
        raise AssertionError(f"more than {hops} redirects from {url}")
