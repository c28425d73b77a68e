"""Time from starting a tunnel client (``ssh -R`` or ``relay-client connect``) until a request through
its URL gets the backend's bytes: the wait a person has before the link they share works.

It includes the client's own start-up (OpenSSH's, or Python's imports for ``relay-client``), the SSH
handshake and authentication, the forward request, and for the classic stack nginx's first upstream
connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from . import nginx
from .backends import SMALL_BODY, SMALL_PATH
from .http_client import Endpoint, fetch, wait_working
from .processes import Child, free_port
from .stacks import Servers, relay_endpoint, spawn_tunnel

#: Seconds between polls of the URL: small against the ~100 ms being measured.
POLL_INTERVAL = 0.002


class UrlTimer:
    """Starts fresh tunnels one after another. The classic stack's nginx front and the port sshd
    forwards stay the same across attempts, as they would for a person's set-up."""

    def __init__(self, servers: Servers, target: int, work: Path) -> None:
        self.servers = servers
        self.target = target
        self.work = work
        self.remote = free_port()
        self.front: Child | None = None
        self.front_port = 0
        self.attempt = 0

    async def start(self) -> None:
        self.front_port = free_port()
        self.front = await nginx.start_front(self.work / "nginx-ttu", self.front_port, self.remote, self.work)

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()

    def _endpoint(self, kind: str, name: str) -> Endpoint:
        if kind.startswith("classic"):
            return Endpoint(self.front_port, f"127.0.0.1:{self.front_port}")
        return relay_endpoint(self.servers, name)

    async def measure(self, kind: str) -> float:
        """One attempt: seconds from spawning the client to the first correct answer."""
        self.attempt += 1
        name = f"ttu{self.attempt}"
        endpoint = self._endpoint(kind, name)
        await self._wait_gone(endpoint)
        started = time.perf_counter()
        child = spawn_tunnel(self.servers, kind, name, self.target, remote=self.remote)
        try:
            await wait_working(endpoint, SMALL_PATH, SMALL_BODY, interval=POLL_INTERVAL)
            return time.perf_counter() - started
        finally:
            child.stop()

    @staticmethod
    async def _wait_gone(endpoint: Endpoint) -> None:
        """The previous attempt's forward must be gone, or the next one would be timed as instant."""
        for _ in range(500):
            try:
                status, _ = await fetch(endpoint, SMALL_PATH)
            except (OSError, asyncio.TimeoutError):
                return
            if status != 200:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{endpoint.host} still answers after its tunnel was stopped")


@contextlib.asynccontextmanager
async def url_timer(servers: Servers, target: int, work: Path) -> AsyncIterator[UrlTimer]:
    timer = UrlTimer(servers, target, work)
    await timer.start()
    try:
        yield timer
    finally:
        timer.stop()
