"""The node-to-node link: one TCP connection per forwarded request stream, opened with a signed
preamble (:mod:`.hop`), then joined to a channel of the tunnel as if the asking node held it.

The node a visitor reached has already done everything the front does: strict head parsing, the
smuggling rules, routing, auth, the relay's own headers stripped and ``X-Forwarded-*`` set. What
crosses the link is the request exactly as the tunnel's backend would get it over SSH; the holding
node adds nothing, reads no credential from it, and forwards it nowhere else (no loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from ..errors import BadGateway, RelayError
from ..logfmt import emit
from ..proxy.forward import LINGER
from ..proxy.splice import End, Splice
from ..readbuffer import ReadBuffer
from ..socketstream import SocketStream
from ..store.cluster import NodeInfo
from ..tunnels import Registry, Stream, StreamOpener
from . import hop

log = logging.getLogger(__name__)

#: Seconds a peer has to send its preamble, and an asking node waits for the answer.
PREAMBLE_TIMEOUT = 5.0
#: Bytes buffered per direction of a link connection before reading pauses.
BUFFER = 2**16


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def peer_allowed(peer_ip: str, addresses: list[str]) -> bool:
    """Is ``peer_ip`` the address of one of the cluster's nodes? (A visitor's address is not, so even
    a leaked secret does not let a visitor reach a tunnel through this link.)"""
    try:
        peer = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    for address in addresses:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(_host_port(address)[0]) == peer:
                return True
    return False


class HopOpener:
    """How this node opens a hop to the node holding a host (the asking side)."""

    def __init__(self, *, me: str, secret: bytes, source: str) -> None:
        """``source``: this node's cluster address, which hops leave from (the holding node checks
        that they come from a node's address)."""
        self.me = me
        self.secret = secret
        self.source = source

    def opener(self, node: NodeInfo, host: str) -> StreamOpener:
        async def open_stream() -> Stream:
            return await self.open(node, host)

        return open_stream

    async def open(self, node: NodeInfo, host: str) -> Stream:
        address, port = _host_port(node.address)
        loop = asyncio.get_running_loop()
        try:
            _, stream = await loop.create_connection(
                lambda: SocketStream(limit=BUFFER), address, port, local_addr=(self.source, 0)
            )
        except OSError as exc:
            raise BadGateway(
                f"node {node.name}, which holds {host}, cannot be reached: {exc.strerror or exc}"
            ) from None
        stream.write(hop.preamble(self.secret, hop.new_hop(self.me, node.name, host, time.time())))
        try:
            answer = await asyncio.wait_for(stream.readuntil(b"\n"), PREAMBLE_TIMEOUT)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            asyncio.TimeoutError,
        ):
            stream.close()
            raise BadGateway(f"node {node.name}, which holds {host}, did not answer") from None
        if answer != hop.OK:
            stream.close()
            why = answer.decode("ascii", "replace").strip().removeprefix("NO ")[:200]
            raise BadGateway(f"node {node.name} did not take the request for {host}: {why}")
        return Stream(stream, stream)


class _Accepted(SocketStream):
    def __init__(self, accepted: Callable[[SocketStream], None]) -> None:
        super().__init__(limit=BUFFER)
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._accepted(self)


class HopServer:
    """The holding side: checks each preamble, then joins the connection to a tunnel channel."""

    def __init__(
        self,
        *,
        me: str,
        secret: bytes,
        registry: Registry,
        node_addresses: Callable[[], list[str]],
        stall: float,
        refresh_nodes: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.me = me
        self.secret = secret
        self.registry = registry
        self.node_addresses = node_addresses
        #: Reads the nodes again: a node that joined since the last heartbeat is not known yet.
        self.refresh_nodes = refresh_nodes
        self.stall = stall
        self.nonces = hop.Nonces()
        self._tasks: set[asyncio.Task[None]] = set()

    def protocol(self) -> SocketStream:
        return _Accepted(self._accepted)

    def _accepted(self, stream: SocketStream) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, stream: SocketStream) -> None:
        peer = stream.get_extra_info("peername")
        peer_ip = str(peer[0]) if peer else "unknown"
        try:
            why = await self._join(stream, peer_ip)
        except asyncio.CancelledError:
            stream.close()
            raise
        except Exception:  # one hop's bug must not go unseen, nor leave its socket open
            log.exception("serving a hop from %s failed", peer_ip)
            stream.close()
            return
        if why is not None:
            emit(log, logging.WARNING, "cluster.hop_refused", peer=peer_ip, why=why)
            await self._refuse(stream, why)

    @staticmethod
    async def _refuse(stream: SocketStream, why: str) -> None:
        """Answer ``NO why`` and close gently: closing with the peer's bytes unread would reset the
        connection, and the reset can overtake the answer."""
        if stream.is_closing():
            return
        stream.write(f"NO {why}\n".encode())
        with contextlib.suppress(OSError, RuntimeError):
            stream.transport.write_eof()

        async def discard() -> None:
            while await stream.read(BUFFER):
                pass

        with contextlib.suppress(Exception):
            await asyncio.wait_for(discard(), 1.0)
        stream.close()

    async def _join(self, stream: SocketStream, peer_ip: str) -> str | None:
        """Serve one hop; returns why it was refused (None: it was served)."""
        if not peer_allowed(peer_ip, self.node_addresses()):
            if self.refresh_nodes is not None:
                await self.refresh_nodes()
            if not peer_allowed(peer_ip, self.node_addresses()):
                return "not from a node of this cluster"
        try:
            line = await asyncio.wait_for(stream.readuntil(b"\n"), PREAMBLE_TIMEOUT)
        except (asyncio.LimitOverrunError, ValueError):
            return "malformed preamble"
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.TimeoutError):
            return "no preamble"
        checked = hop.check(line, self.secret, me=self.me, now=time.time(), nonces=self.nonces)
        if isinstance(checked, str):
            return checked
        tunnel = self.registry.get(checked.host)
        if tunnel is None:
            return f"no tunnel at {checked.host} on node {self.me}"
        try:
            channel = await tunnel.open_stream()
        except RelayError as exc:
            return str(exc)
        stream.write(hop.OK)
        reader = channel.reader
        assert isinstance(reader, ReadBuffer)
        splice = Splice(
            (stream, stream),
            (reader, cast(End, channel.writer)),  # every tunnel channel is one (as in forward.py)
            count=(tunnel.count_in, tunnel.count_out),
            linger=LINGER,
            stall=self.stall,
        )
        try:
            await splice.run()
        finally:
            channel.close()
            stream.close()
        return None
