"""The tunnel: an asyncssh client that asks the relay for ``-R NAME:80`` to a local port, learns its
public URL from ``tunnels --json``, and holds the tunnel open, reconnecting with backoff and jitter."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from ssh_tuning import tune_connection

from .addresses import AddressBook, tcp_connect
from .config import ClientError, HostKeyPins

if TYPE_CHECKING:
    from .wss import WebSocketTunnel

#: Keepalive: a probe every 15 s, four unanswered → the link is dead (noticed within a minute).
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 4
#: With other nodes to go to (--relay a,b,c), a probe every 3 s and two unanswered: a frozen node is
#: left within ~9 s, before the cluster counts it dead (10 s), so the URL is back on another quickly.
CLUSTER_KEEPALIVE = (3.0, 2)
#: Reconnect backoff: first retry after 0.5 s, doubling to at most 30 s, with ±25 % jitter.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.25
#: A connection that stayed up this long resets the backoff.
STABLE_AFTER = 5.0
#: --transport auto: how long the SSH port has to answer before SSH over WebSocket is tried.
AUTO_TIMEOUT = 5.0
#: --transport ssh: how long each of the relay's addresses has to answer.
CONNECT_TIMEOUT = 10.0
#: AES-GCM first: 2× faster than chacha20 in asyncssh (DESIGN §5).
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]


@dataclass
class TunnelSpec:
    relay_host: str
    relay_port: int
    user: str
    local_port: int
    token: str | None = None
    key_path: Path | None = None
    name: str | None = None  # None: the user's default name
    domain: str | None = None  # a verified custom domain instead of a name
    host_key: str | None = None  # "SHA256:..." to pin up front
    #: 80: an HTTP tunnel; any other port: a TCP alias NAME:PORT (``--tcp``), reached by ssh -J / -L.
    remote_port: int = 80
    #: auto: the SSH port, then SSH over WebSocket if it does not answer; ssh or wss: only that one.
    transport: str = "auto"
    wss: str | None = None  # the WebSocket URL (default wss://RELAY_HOST/_relay/ssh)
    #: More addresses of the same relay (a cluster's nodes: ``--relay a,b,c``), tried in turn after
    #: this one when a connection cannot be made or is lost.
    others: tuple[tuple[str, int], ...] = ()

    def next_address(self) -> bool:
        """Move on to the next address (the current one goes last); False if there is no other."""
        if not self.others:
            return False
        (host, port), rest = self.others[0], self.others[1:]
        self.others = (*rest, (self.relay_host, self.relay_port))
        self.relay_host, self.relay_port = host, port
        return True

    @property
    def wss_url(self) -> str:
        return self.wss or f"wss://{self.relay_host}/_relay/ssh"

    @property
    def relay(self) -> str:
        return f"{self.relay_host}:{self.relay_port}"

    @property
    def bind(self) -> str:
        return self.domain or self.name or ""


class Fatal(ClientError):
    """Retrying cannot help (wrong credentials, changed host key, name refused)."""


def backoff_delays(rng: random.Random | None = None) -> Callable[[], float]:
    """A generator of retry delays: exponential, capped, jittered."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
    state = {"next": BACKOFF_FIRST}

    def next_delay() -> float:
        base = state["next"]
        state["next"] = min(base * 2, BACKOFF_MAX)
        return base * (1 + rng.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))

    return next_delay


class _PinningClient(asyncssh.SSHClient):
    """Accepts the relay's host key only if it matches the pin; pins it on first use."""

    def __init__(self, spec: TunnelSpec, pins: HostKeyPins, events: Callable[[str], None]) -> None:
        self.spec = spec
        self.pins = pins
        self.events = events
        self.mismatch: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        seen = str(key.get_fingerprint("sha256"))
        expected = self.spec.host_key or self.pins.get(self.spec.relay)
        if expected is None:
            self.pins.pin(self.spec.relay, seen)
            self.events(f"pinned the relay's host key {seen} for {self.spec.relay} (first use)")
            return True
        if seen != expected:
            self.mismatch = (
                f"the relay {self.spec.relay} presented host key {seen}, but {expected} is pinned. "
                "This is what a man-in-the-middle looks like; if the relay's key really changed, "
                f"remove the entry from {self.pins.path} or pass --host-key {seen}"
            )
            return False
        if self.spec.host_key and self.pins.get(self.spec.relay) != seen:
            self.pins.pin(self.spec.relay, seen)
        return True


class TunnelClient:
    """Holds one tunnel open. ``events`` receives one human line per state change."""

    def __init__(self, spec: TunnelSpec, pins: HostKeyPins, events: Callable[[str], None]) -> None:
        self.spec = spec
        self.pins = pins
        self.events = events
        self.url: str | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._stopping = False
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.addresses = AddressBook()
        self._peer: str | None = None  # the address of the relay this try connected to
        self._several = False  # the relay's name has several addresses (a cluster's nodes)

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        spec = self.spec
        client = _PinningClient(spec, self.pins, self.events)
        keys = [str(spec.key_path)] if spec.key_path else []
        sock, tunnel = await self._transport()
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    spec.relay_host,
                    spec.relay_port,
                    sock=sock,
                    tunnel=tunnel or (),
                    username=spec.user,
                    password=spec.token,
                    client_keys=keys,
                    agent_path=None,
                    config=[],
                    known_hosts=([], [], []),
                    client_factory=lambda: client,
                    keepalive_interval=CLUSTER_KEEPALIVE[0] if self._elsewhere else KEEPALIVE_INTERVAL,
                    keepalive_count_max=CLUSTER_KEEPALIVE[1] if self._elsewhere else KEEPALIVE_COUNT_MAX,
                    encryption_algs=ENCRYPTION_ALGS,
                    preferred_auth=["publickey", "password"] if keys else ["password"],
                ),
                30,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise Fatal(client.mismatch or "the relay's host key could not be verified") from None
        except asyncssh.PermissionDenied:
            raise Fatal(f"the relay refused user {spec.user!r}: check the token or key") from None
        tune_connection(conn)  # the relay's own per-packet savings, on this side of the link too
        return conn

    @property
    def _elsewhere(self) -> bool:
        """Another node to go to: --relay a,b,c, or a name with several addresses."""
        return bool(self.spec.others) or self._several

    async def _ssh_port(self, timeout: float) -> socket.socket:
        spec, self._peer = self.spec, None
        sock, count = await tcp_connect(spec.relay_host, spec.relay_port, timeout, self.addresses)
        self._peer, self._several = str(sock.getpeername()[0]), count > 1
        return sock

    def _shun_peer(self) -> None:
        """The address this try connected to failed, or dropped the link: others first next time."""
        if self._peer is not None:
            self.addresses.failed(self._peer)
            self._peer = None

    async def _transport(self) -> tuple[socket.socket | None, WebSocketTunnel | None]:
        """What asyncssh runs over: a connection to the SSH port, or the relay's SSH WebSocket."""
        spec = self.spec
        if spec.transport == "ssh":
            return await self._ssh_port(CONNECT_TIMEOUT), None
        if spec.transport == "auto":
            try:
                return await self._ssh_port(AUTO_TIMEOUT), None
            except (OSError, asyncio.TimeoutError) as exc:
                self.events(
                    f"the SSH port {spec.relay} did not answer within {AUTO_TIMEOUT:.0f} s ({_why(exc)}); "
                    f"trying SSH over WebSocket, {spec.wss_url}"
                )
        from .wss import WebSocketTunnel  # aiohttp, imported only when a WebSocket is used

        return None, WebSocketTunnel(spec.wss_url)

    async def _open_tunnel(self, conn: asyncssh.SSHClientConnection) -> str:
        spec = self.spec
        try:
            await conn.forward_remote_port(spec.bind, spec.remote_port, "127.0.0.1", spec.local_port)
        except asyncssh.ChannelListenError:
            reason = "the relay refused the tunnel"
            doc = await self._tunnels_doc(conn)
            notices = doc.get("notices") or []
            if notices:
                reason = str(notices[-1]).removeprefix("refused ")
            raise Fatal(reason) from None
        doc = await self._tunnels_doc(conn)
        alias = spec.remote_port != 80
        mine = [t for t in doc.get("aliases" if alias else "tunnels", []) if t.get("this_connection")]
        if not mine:
            raise ClientError("the relay accepted the tunnel but does not list it")
        if alias:
            self.events(f"reach it with: {mine[0]['hint']}")
            return str(mine[0]["alias"])
        return str(mine[0]["url"])

    @staticmethod
    async def _tunnels_doc(conn: asyncssh.SSHClientConnection) -> dict[str, list[dict[str, object]]]:
        result = await conn.run("tunnels --json", check=True, timeout=30)
        doc = json.loads(str(result.stdout))
        assert isinstance(doc, dict)
        return doc

    async def run(self) -> None:
        """Connect, and reconnect whenever the link drops, until :meth:`stop` or a fatal error."""
        delays = backoff_delays()
        first = True
        untried = 1 + len(self.spec.others)  # addresses left to try before backing off
        while not self._stopping:
            started = time.monotonic()
            try:
                conn = await self._connect_once()
                self._conn = conn
                url = await self._open_tunnel(conn)
            except Fatal as exc:
                if not self.ready.done():
                    self.ready.set_exception(exc)
                raise
            except (OSError, asyncssh.Error, asyncio.TimeoutError, ClientError) as exc:
                if self._stopping:
                    break
                self._shun_peer()
                failed, untried = self.spec.relay, untried - 1
                if untried > 0 and self.spec.next_address():  # another node of the relay: at once
                    self.events(f"cannot reach the relay {failed} ({_why(exc)}); trying {self.spec.relay}")
                    continue
                untried = 1 + len(self.spec.others)  # every address failed: back off, then all again
                self.spec.next_address()
                delay = delays()
                self.events(f"cannot reach the relay {failed} ({_why(exc)}); retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
                continue
            self.url, untried = url, 1 + len(self.spec.others)
            if first:
                self.events(f"connected to {self.spec.relay} as {self.spec.user}")
                first = False
            else:
                self.events(f"back: {url}")
            if not self.ready.done():
                self.ready.set_result(url)
            await conn.wait_closed()
            self._conn = None
            if self._stopping:
                break
            self._shun_peer()
            if time.monotonic() - started > STABLE_AFTER:
                delays = backoff_delays()
            delay = delays()
            lost = self.spec.relay
            if self.spec.next_address():  # a node that dropped us may be going away: the next first
                self.events(f"connection to the relay {lost} lost; trying {self.spec.relay} in {delay:.1f} s")
            else:
                self.events(f"connection to the relay lost; retrying in {delay:.1f} s")
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self._stopping = True
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
