"""Which address of the relay to try first. A relay's name may have several (a cluster's nodes, one
DNS record each): they are tried in the resolver's order, except that an address that just failed —
a connection that could not be made or set up, or one that was lost — goes to the back for a while.
A node that is frozen still takes TCP connections (its kernel does) and answers nothing, and one
that dropped its clients may be going away: any other record is a better first try."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Seconds an address that failed stays at the back of the line.
SHUN_FOR = 60.0

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


class AddressBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failed: dict[str, float] = {}  # address -> when it last failed

    def failed(self, address: str) -> None:
        self._failed[address] = self._clock()

    def order(self, infos: Sequence[AddrInfo]) -> list[AddrInfo]:
        """``infos`` in the resolver's order, those that failed within SHUN_FOR last (the one
        that failed longest ago first among them)."""
        now = self._clock()
        recent = {a: t for a, t in self._failed.items() if now - t < SHUN_FOR}
        self._failed = recent
        return sorted(infos, key=lambda info: (info[4][0] in recent, recent.get(info[4][0], 0.0)))


async def tcp_connect(
    host: str, port: int, timeout: float, book: AddressBook | None = None
) -> tuple[socket.socket, int]:
    """A TCP connection to the first address of ``host`` that answers within ``timeout`` seconds
    (each address gets its own ``timeout``), and how many addresses ``host`` has."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    last: BaseException = OSError(f"no address for {host}")
    for family, kind, proto, _, address in book.order(infos) if book else infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            if book is not None:
                book.failed(str(address[0]))
            last = exc
            continue
        return sock, len(infos)
    raise last
