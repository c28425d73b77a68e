"""The tunnel registry: the one place where the SSH side and the HTTP side meet.

The SSH side adds a :class:`Tunnel` when a client asks for ``-R NAME:80:...`` and removes it when the
forward or the connection ends; the HTTP side looks tunnels up by host and calls
:meth:`Tunnel.open_stream`. Neither side ever calls the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    async def readuntil(self, separator: bytes) -> bytes: ...
    def at_eof(self) -> bool: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


@dataclass
class Stream:
    """A byte stream to a tunnel's backend (one SSH channel)."""

    reader: ByteReader
    writer: ByteWriter

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


StreamOpener = Callable[[], Awaitable[Stream]]


@dataclass(eq=False)
class Tunnel:
    """One live HTTP tunnel: a public host served by one SSH connection's reverse forward."""

    host: str
    user_id: int
    user_name: str
    client: str  # "ip:port" of the SSH client
    opener: StreamOpener
    since: float = field(default_factory=time.time)
    bytes_in: int = 0  # visitor → backend
    bytes_out: int = 0  # backend → visitor
    closed: bool = False

    async def open_stream(self) -> Stream:
        """Open a new channel to the backend. Raises ``OSError``-like errors if the client refuses."""
        return await self.opener()

    def as_json(self, scheme_url: Callable[[str], str]) -> dict[str, object]:
        return {
            "host": self.host,
            "url": scheme_url(self.host),
            "user": self.user_name,
            "client": self.client,
            "since": round(self.since, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


Listener = Callable[[str, "Tunnel | None"], None]


class Registry:
    """Live tunnels by public host. In memory: a relay restart drops them and clients reconnect."""

    def __init__(self) -> None:
        self._by_host: dict[str, Tunnel] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """``listener(host, tunnel_or_None)`` is called after each change."""
        self._listeners.append(listener)

    def _notify(self, host: str, tunnel: Tunnel | None) -> None:
        for listener in self._listeners:
            try:
                listener(host, tunnel)
            except Exception:
                log.exception("registry listener failed for %s", host)

    def add(self, tunnel: Tunnel) -> Tunnel | None:
        """Register ``tunnel``; returns the tunnel it displaced (same host), which is now closed."""
        old = self._by_host.get(tunnel.host)
        if old is not None:
            old.closed = True
        self._by_host[tunnel.host] = tunnel
        self._notify(tunnel.host, tunnel)
        return old

    def remove(self, tunnel: Tunnel) -> None:
        """Unregister ``tunnel`` if it is still the one serving its host."""
        tunnel.closed = True
        if self._by_host.get(tunnel.host) is tunnel:
            del self._by_host[tunnel.host]
            self._notify(tunnel.host, None)

    def get(self, host: str) -> Tunnel | None:
        return self._by_host.get(host)

    def for_user(self, user_id: int) -> list[Tunnel]:
        return [t for t in self._by_host.values() if t.user_id == user_id]

    def all(self) -> list[Tunnel]:
        return list(self._by_host.values())

    def __len__(self) -> int:
        return len(self._by_host)
