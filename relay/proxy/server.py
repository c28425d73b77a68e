"""The HTTP front's accept side: admission (connection caps per address and in total), one
:class:`Visitor` per connection, and the drain at shutdown. Shares only the registry with SSH."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..admission import Gate, Refusal
from ..audit import AuditLog
from ..auth import FailureLimiter
from ..client_wheel import Wheel
from ..config import PublicUrl
from ..deadline import Deadline
from ..inspector import Inspector
from ..limits import BUSY_RETRY_AFTER, Limits
from ..logfmt import emit
from ..metrics import Meter
from ..rewrite import IPNetwork, is_trusted
from ..sso import SharedSsoCodes, SsoCodes
from ..store import Store
from ..storereads import RunReads, inline
from ..storewriter import StoreWriter
from ..tunnels import Registry, Tunnel
from .credentials import Credentials
from .forward import Forwarder
from .portal import Portal
from .reply import Reply
from .route import Router
from .ssh_bridge import OpenSsh, SshBridge
from .upgrades import OpenUpgrades
from .visitor import Front, Visitor
from .visitor_stream import VisitorStream

log = logging.getLogger(__name__)


class Proxy:
    """Serves visitor connections."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        public: PublicUrl,
        limiter: FailureLimiter,
        trust_proxy: tuple[IPNetwork, ...],
        limits: Limits | None = None,
        writer: StoreWriter | None = None,
        audit: AuditLog | None = None,
        inspector: Inspector | None = None,
        meter: Meter | None = None,
        dashboard: Tunnel | None = None,
        client_wheel: Wheel | None = None,
        open_ssh: OpenSsh | None = None,
        reads: RunReads = inline,
        route_reads: RunReads | None = None,
        locate: Callable[[str], Tunnel | None] | None = None,
    ) -> None:
        self.meter = meter
        self.limits = limits = limits or Limits()
        self.gate = Gate(
            limits.http_max_connections,
            limits.http_max_connections_per_address,
            limits.http_max_connections_per_network,
            limits.http_early_drop_connections,
        )
        self.trust_proxy = trust_proxy
        self.credentials = Credentials(
            store=store,
            limiter=limiter,
            public=public,
            max_sessions=limits.auth_max_sessions_per_user,
            audit=audit,
        )
        self.portal = Portal(
            store=store,
            registry=registry,
            public=public,
            sso=(
                SharedSsoCodes(store, max_per_user=limits.sso_max_codes_per_user)
                if store.clustered  # any node redeems a code any node minted
                else SsoCodes(max_codes=limits.sso_max_codes, max_per_user=limits.sso_max_codes_per_user)
            ),
            credentials=self.credentials,
            limits=limits,
            client_wheel=client_wheel,
        )
        router = Router(
            registry=registry,
            portal=self.portal,
            credentials=self.credentials,
            public=public,
            trust_proxy=trust_proxy,
            audit_log=audit,
            dashboard=dashboard,
            locate=locate,
        )
        #: Open WebSockets, re-checked every ``share_recheck_interval`` (see :meth:`watch_upgrades`).
        self.upgrades = OpenUpgrades()
        forwarder = Forwarder(
            limits=limits, relay_domain=public.domain, trust_proxy=trust_proxy, upgrades=self.upgrades
        )
        forwarded = Gate(
            limits.http_max_connections,
            limits.http_max_connections_per_address,
            limits.http_max_connections_per_network,
        )
        commit = self._committer(store, writer)
        bridge = SshBridge(open_ssh, limits) if open_ssh is not None else None
        self.reads = reads
        self.front = Front(
            limits,
            router,
            self.portal,
            forwarder,
            trust_proxy,
            forwarded,
            commit,
            inspector,
            meter,
            bridge,
            reads,
            route_reads or reads,
        )
        self._visitors: set[Visitor] = set()
        self.draining = False

    @staticmethod
    def _committer(
        store: Store, writer: StoreWriter | None
    ) -> Callable[[list[Callable[[Store], object]]], Awaitable[None]]:
        """How a reply's store writes run: in the writer thread (the relay), or inline on ``store``
        when no writer is given (a Proxy built for a test)."""

        async def commit(writes: list[Callable[[Store], object]]) -> None:
            if writer is None:
                for write in writes:
                    write(store)
                return
            await writer.run(lambda own: [write(own) for write in writes])

        return commit

    async def watch_upgrades(self) -> None:
        """Runs for the relay's life: closes WebSockets whose access ended (revoked, expired)."""
        await self.upgrades.run(self.limits.share_recheck_interval, self.reads)

    async def serve(self, stream: VisitorStream, scheme: str = "http") -> None:
        peer = stream.get_extra_info("peername")
        peer_ip = peer[0] if peer else "unknown"
        refusal = self.gate.enter(peer_ip, exempt_per_address=is_trusted(peer_ip, self.trust_proxy))
        if refusal is not None:
            await self._refuse_connection(stream, peer_ip, refusal)
            return
        visitor = Visitor(self.front, stream, peer_ip, scheme)
        visitor.draining = self.draining
        self._visitors.add(visitor)
        try:
            await visitor.serve()
        finally:
            self._visitors.discard(visitor)
            self.gate.leave(peer_ip)

    async def _refuse_connection(self, writer: VisitorStream, peer_ip: str, refusal: Refusal) -> None:
        """Past a connection cap: a fast answer without reading the request, then close."""
        if refusal in (Refusal.TOTAL, Refusal.EARLY_DROP):
            reply = Reply.error(503, "the relay is at its connection limit; retry shortly", html=False)
        elif refusal is Refusal.PER_NETWORK:
            reply = Reply.error(429, "too many connections from your network", html=False)
        else:
            reply = Reply.error(429, "too many connections from your address", html=False)
        reply.headers.append(("Retry-After", str(BUSY_RETRY_AFTER)))
        emit(log, logging.WARNING, "http.refused", client=peer_ip, cap=refusal.value, status=reply.status)
        if self.meter is not None:
            self.meter.refused(f"http_{refusal.value}")
        writer.write(reply.encode(keep=False))
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.TimeoutError):
            async with Deadline(self.limits.http_head_timeout):
                await writer.drain()
        writer.close()

    async def drain(self, grace: float) -> None:
        """Stop taking new requests; wait up to ``grace`` seconds for those in flight; close the rest."""
        self.draining = True
        for visitor in list(self._visitors):
            visitor.draining = True
            if not visitor.busy and not visitor.bridged:
                visitor.writer.close()
        deadline = time.monotonic() + grace
        # Polling is enough here: it runs once, at shutdown, for at most ``grace`` seconds.
        while any(v.busy and not v.bridged for v in self._visitors) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for visitor in list(self._visitors):
            if not visitor.bridged:  # SSH over WebSocket ends with its SSH connection (close_all)
                visitor.writer.close()
