"""This node's place in the cluster: its heartbeat, the other nodes, and the table of routes.

Every :data:`HEARTBEAT` seconds the node says it lives and reads the nodes and the routes back (the
full table: a NOTIFY that was lost is mended within one beat). Route notices arrive within a second
in between. Whatever the table says another node holds, this node does not serve: a local tunnel
whose host is now routed elsewhere (the same user reconnected there) is closed at once, and a node
that has not reached the database for :data:`FENCE_AFTER` seconds stops serving its own tunnels
(others may already count it dead) until a heartbeat says where things stand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable

from ..logfmt import emit
from ..store import STORE_ERRORS, Store
from ..store.cluster import DEAD_AFTER, NodeInfo, Route
from ..storereads import RunReads
from ..tunnels import Registry, StreamOpener, Tunnel

log = logging.getLogger(__name__)

#: Seconds between heartbeats (DESIGN §3.9).
HEARTBEAT = 2.0
#: Seconds without a heartbeat after which this node stops serving its tunnels: before the others
#: count it dead (DEAD_AFTER), so two nodes never serve one host.
FENCE_AFTER = DEAD_AFTER - HEARTBEAT


class ClusterNode:
    def __init__(
        self,
        *,
        name: str,
        store: Store,
        reads: RunReads,
        registry: Registry,
        close_tunnel: Callable[[str, str], bool],
        open_hop: Callable[[NodeInfo, str], StreamOpener],
    ) -> None:
        self.name = name
        self.incarnation = secrets.token_hex(8)
        self.store = store
        self.reads = reads
        self.registry = registry
        self.close_tunnel = close_tunnel
        self._open_hop = open_hop
        self.address = ""  # HOST:PORT of this node's link, once it listens
        self.routes: dict[str, Route] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self._nodes_read = time.monotonic()  # when ``nodes`` was read (their silence grows since)
        self._asked = 0.0  # when refresh_nodes last asked (it asks at most once a second)
        self._last_beat = time.monotonic()  # the last heartbeat the database took
        self._remote: dict[tuple[str, str, str], Tunnel] = {}
        self._remote_lock = threading.Lock()
        #: When each local tunnel came up here: a table read before that cannot know of it yet.
        self._local_since: dict[str, float] = {}
        self.draining = False
        self._tasks: set[asyncio.Future[None]] = set()
        registry.subscribe(self._on_registry_change)

    def _on_registry_change(self, host: str, tunnel: Tunnel | None) -> None:
        # Ours from now: the store's row (and its notice to the other nodes) follows shortly.
        if tunnel is None:
            self._local_since.pop(host, None)
            if (route := self.routes.get(host)) is not None and route.node == self.name:
                del self.routes[host]
        else:
            self._local_since[host] = time.monotonic()
            self.routes[host] = Route(self.name, tunnel.user_id, tunnel.since)

    # -- what a visitor's request is routed to -------------------------------------------------

    @property
    def fenced(self) -> bool:
        return time.monotonic() - self._last_beat > FENCE_AFTER

    def alive(self, node: str) -> NodeInfo | None:
        info = self.nodes.get(node)
        if info is None or info.silent_for + (time.monotonic() - self._nodes_read) >= DEAD_AFTER:
            return None
        return info

    def tunnel_for(self, host: str) -> Tunnel | None:
        """The tunnel a request for ``host`` goes to: this node's own, or another live node's (one
        hop), or None (offline). May run in a reader thread: it only reads dicts."""
        route = self.routes.get(host)
        local = self.registry.get(host)
        if local is not None and (route is None or route.node == self.name) and not self.fenced:
            return local
        if route is None or route.node == self.name:
            return None
        info = self.alive(route.node)
        if info is None:
            return None  # its node is dead: offline until its client reconnects somewhere
        key = (host, route.node, info.address)  # a node started again may listen elsewhere
        remote = self._remote.get(key)
        if remote is not None and remote.user_id == route.user_id:
            return remote
        with self._remote_lock:  # reader threads route at once; each host gets one object (a
            remote = self._remote.get(key)  # WebSocket's recheck compares it by identity)
            if remote is None or remote.user_id != route.user_id:
                remote = Tunnel(
                    host=host, user_id=route.user_id, user_name="", client=f"node {route.node}",
                    opener=self._open_hop(info, host),
                )  # fmt: skip
                if len(self._remote) > 10_000:
                    self._remote.clear()
                self._remote[key] = remote
        return remote

    # -- keeping the tables true -----------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeat until cancelled."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self.beat()
            except Exception:  # a bug here must not stop the heartbeat (the node would fence itself)
                log.exception("cluster heartbeat failed")

    async def beat(self) -> None:
        store, name, incarnation = self.store, self.name, self.incarnation
        tunnels, draining = len(self.registry.all()), self.draining
        try:
            gap = await self.reads(lambda: store.heartbeat(name, incarnation, tunnels, draining=draining))
            read_at = time.monotonic()
            nodes, routes = await self.reads(lambda: (store.nodes(), store.routes()))
        except STORE_ERRORS as exc:
            emit(log, logging.WARNING, "cluster.heartbeat_failed", node=name, error=exc)
            if self.fenced:
                self._fence()
            return
        if gap is None:  # our row is gone: another process took this name while we were away
            emit(log, logging.ERROR, "cluster.node_replaced", node=name)
            self._last_beat = time.monotonic() - 2 * DEAD_AFTER
            self._fence()
            return
        self._last_beat = time.monotonic()
        self.nodes, self._nodes_read = {n.name: n for n in nodes}, time.monotonic()
        self._apply(routes, read_at)

    async def refresh_nodes(self) -> None:
        """Read the nodes now (at most once a second: a stranger knocking costs no more)."""
        if time.monotonic() - self._asked < 1.0:
            return
        store, self._asked = self.store, time.monotonic()
        with contextlib.suppress(*STORE_ERRORS):
            nodes = await self.reads(store.nodes)
            self.nodes, self._nodes_read = {n.name: n for n in nodes}, time.monotonic()

    def _fence(self) -> None:
        for tunnel in list(self.registry.all()):
            self.close_tunnel(tunnel.host, "this relay node lost its cluster's database; reconnect")

    def _apply(self, routes: dict[str, Route], read_at: float) -> None:
        """Take a full route table read at ``read_at``; close local tunnels another node now holds
        (but not one that came up here after the read: the table could not know of it)."""
        for host, since in self._local_since.items():
            tunnel = self.registry.get(host)
            if since >= read_at and tunnel is not None:
                routes[host] = Route(self.name, tunnel.user_id, tunnel.since)
        self.routes = routes
        for tunnel in list(self.registry.all()):
            self._check_local(tunnel.host)

    def _check_local(self, host: str) -> None:
        route, local = self.routes.get(host), self.registry.get(host)
        if route is None or local is None or route.node == self.name:
            return
        if route.since < local.since:  # an older claim: ours is on its way to the store
            self.routes[host] = Route(self.name, local.user_id, local.since)
            return
        emit(log, logging.INFO, "cluster.taken_over", host=host, by=route.node)
        self.close_tunnel(host, f"{host} was taken over on node {route.node}")

    async def reload(self) -> None:
        """The whole route table again (after the listening connection was made: NOTIFY is not
        durable, so whatever changed while it was down is read here)."""
        store, read_at = self.store, time.monotonic()
        try:
            routes = await self.reads(store.routes)
        except STORE_ERRORS as exc:
            emit(log, logging.WARNING, "cluster.routes_unread", error=exc)
            return
        self._apply(routes, read_at)

    def on_route_notice(self, host: str) -> None:
        """A route changed (NOTIFY payload: its host; "" for many): read it and act, off the loop."""
        task = asyncio.ensure_future(self._refresh(host))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, host: str) -> None:
        if not host:
            await self.reload()
            return
        store, read_at = self.store, time.monotonic()
        try:
            route = await self.reads(lambda: store.route(host))
        except STORE_ERRORS as exc:
            emit(log, logging.WARNING, "cluster.routes_unread", error=exc)
            return
        if self._local_since.get(host, -1.0) >= read_at:
            return  # a tunnel came up here meanwhile: the answer is older than it
        if route is not None and route.node not in self.nodes:  # a node that joined since the last beat
            with contextlib.suppress(*STORE_ERRORS):
                nodes = await self.reads(store.nodes)
                self.nodes, self._nodes_read = {n.name: n for n in nodes}, time.monotonic()
        if route is None:
            if (
                (mine := self.routes.get(host)) is None
                or mine.node != self.name
                or host not in self._local_since
            ):
                self.routes.pop(host, None)
        else:
            self.routes[host] = route
            self._check_local(host)
