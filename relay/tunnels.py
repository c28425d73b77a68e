"""The tunnel registry: the one place where the SSH side and the HTTP side meet.

The SSH side adds a :class:`Tunnel` when a client asks for ``-R NAME:80:...`` and removes it when the
forward or the connection ends; the HTTP side looks tunnels up by host and calls
:meth:`Tunnel.open_stream`. Neither side ever calls the other.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ServiceUnavailable
from .limits import BUSY_RETRY_AFTER

log = logging.getLogger(__name__)


class TunnelLost(Exception):
    """The tunnel's SSH link dropped under an open channel (its client was killed or restarted).

    The SSH side raises it from a :class:`Stream` in place of its library's own errors, so the HTTP
    side tells a lost tunnel from a lost visitor (``ConnectionError``) and from a bug (anything else)."""


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    async def readuntil(self, separator: bytes) -> bytes: ...
    def at_eof(self) -> bool: ...


class ChannelReader(ByteReader, Protocol):
    """A tunnel channel's reader: it can also say how much arrived that nobody has read."""

    def buffered(self) -> int: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


@dataclass
class Stream:
    """A byte stream to a tunnel's backend (one SSH channel)."""

    reader: ChannelReader
    writer: ByteWriter
    on_close: Callable[[], None] | None = field(default=None, repr=False)

    def clean(self) -> bool:
        """May this channel carry another request? Only if it is open and nothing arrived past the
        last response's framing: extra bytes would be read as the next request's response."""
        return not self.reader.at_eof() and not self.reader.buffered() and not self.writer.is_closing()

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        release, self.on_close = self.on_close, None
        if release is not None:
            release()  # exactly once, however many paths close the stream


StreamOpener = Callable[[], Awaitable[Stream]]


class UserStreams:
    """Channels open at once to all tunnels of each user, capped: one user's many tunnels and
    long-lived WebSockets cannot take every visitor slot of the relay."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: Counter[int] = Counter()

    def full(self, user_id: int) -> bool:
        return self._open[user_id] >= self.cap

    def take(self, user_id: int) -> None:
        self._open[user_id] += 1

    def give_back(self, user_id: int) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    def count(self, user_id: int) -> int:
        return self._open.get(user_id, 0)


@dataclass(eq=False)
class Tunnel:
    """One live HTTP tunnel: a public host served by one SSH connection's reverse forward."""

    host: str
    user_id: int
    user_name: str
    client: str  # "ip:port" of the SSH client
    opener: StreamOpener
    since: float = field(default_factory=time.time)
    bytes_in: int = 0  # visitor → backend, counted as they flow
    bytes_out: int = 0  # backend → visitor, counted as they flow
    requests: int = 0  # forwarded
    closed: bool = False
    #: Channels open at once to this tunnel's client (0: no cap); counted from open to Stream.close().
    max_channels: int = 0
    channels: int = 0
    #: The owner's channels across all their tunnels (None: not capped).
    user_streams: UserStreams | None = field(default=None, repr=False)
    #: Open channels kept idle by visitor connections for their next request, oldest first.
    _parked: OrderedDict[int, Stream] = field(default_factory=OrderedDict, repr=False)

    async def open_stream(self) -> Stream:
        """Open a new channel to the backend. Raises :class:`BadGateway` if the client refuses or is
        gone, and :class:`ServiceUnavailable` at once when ``max_channels`` are busy: never a queue."""
        users = self.user_streams
        at_cap = self.max_channels and self.channels >= self.max_channels
        if (at_cap or (users is not None and users.full(self.user_id))) and self._parked:
            # An idle kept channel is a convenience; a request waiting for one is not.
            _, oldest = self._parked.popitem(last=False)
            oldest.close()
        if self.max_channels and self.channels >= self.max_channels:
            raise ServiceUnavailable(
                f"the tunnel {self.host} is serving {self.channels} requests at once, its limit; "
                "retry shortly",
                retry_after=BUSY_RETRY_AFTER,
            )
        if users is not None and users.full(self.user_id):
            raise ServiceUnavailable(
                f"the tunnels of {self.user_name} are serving {users.cap} requests at once, "
                "the relay's limit per user; retry shortly",
                retry_after=BUSY_RETRY_AFTER,
            )
        self.channels += 1
        if users is not None:
            users.take(self.user_id)
        try:
            stream = await self.opener()
        except BaseException:
            self._released(None)
            raise
        stream.on_close = lambda: self._released(stream)
        return stream

    def _released(self, stream: Stream | None) -> None:
        self.channels -= 1
        if self.user_streams is not None:
            self.user_streams.give_back(self.user_id)
        if stream is not None:
            self._parked.pop(id(stream), None)

    def count_in(self, n: int) -> None:
        self.bytes_in += n

    def count_out(self, n: int) -> None:
        self.bytes_out += n

    def park(self, stream: Stream) -> None:
        """``stream`` is idle, kept by a visitor connection; it may be closed to make room."""
        self._parked[id(stream)] = stream

    def unpark(self, stream: Stream) -> None:
        self._parked.pop(id(stream), None)

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


class Metered:
    """A writer that counts the bytes written through it as they go (``count(n)``), so a long
    download or an open WebSocket shows in the counters while it runs, not when it ends."""

    __slots__ = ("_count", "_dst")

    def __init__(self, dst: ByteWriter, count: Callable[[int], None]) -> None:
        self._dst = dst
        self._count = count

    def write(self, data: bytes) -> None:
        self._dst.write(data)
        self._count(len(data))

    async def drain(self) -> None:
        await self._dst.drain()

    def write_eof(self) -> None:
        self._dst.write_eof()

    def close(self) -> None:
        self._dst.close()

    def is_closing(self) -> bool:
        return self._dst.is_closing()


class Registry:
    """Live tunnels by public host. In memory: a relay restart drops them and clients reconnect."""

    def __init__(self, node: str = "") -> None:
        self._by_host: dict[str, Tunnel] = {}
        self._listeners: list[Listener] = []
        #: The cluster node these tunnels are on ("" for a single relay).
        self.node = node

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
