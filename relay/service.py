"""The running relay: owns start-up and a fixed shutdown order (CLI → Config → Service)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import asyncssh
from aiohttp import web
from prometheus_client import CollectorRegistry

from . import client_wheel, hostkey, onboarding
from .admission import raise_fd_limit
from .audit import AuditLog, Event, write_batch
from .auth import FailureLimiter
from .cluster import setup as cluster_setup
from .cluster.link import HopOpener, HopServer
from .cluster.node import ClusterNode
from .config import Config, PublicUrl
from .dashboard import DashboardContext, dashboard_app
from .dashboard import seam as dashboard_seam
from .datadir import STORE_URL_FILE, DataDirLock, ensure_data_dir, record_store, recorded_store
from .dnscheck import DnsChecker
from .errors import Conflict, StoreError
from .inspector import Inspector
from .logfmt import emit
from .metrics import HostTotals, Meter, RelayCollector, metrics_app
from .proxy import Proxy
from .proxy.visitor_stream import VisitorStream
from .ssh import SshConnections, SshContext, start_ssh_server, start_stream_server
from .ssh.aliases import Alias, AliasTable, jump_hosts, recheck_jumps
from .ssh.stream_server import StreamListener
from .store import STORE_ERRORS, Store
from .storereads import StoreReads
from .storewriter import StoreWriter
from .tls import CertificateSet
from .tunnels import Registry, Tunnel

log = logging.getLogger(__name__)

#: Seconds between writes of per-tunnel byte counters to the store (read by ``relay tunnels``).
LIVE_STATS_INTERVAL = 5.0
#: Seconds between re-checks that each SSH connection's token or key is still valid (revoked → closed).
CREDENTIAL_RECHECK_INTERVAL = 10.0
#: Seconds between purges of expired sessions.
SESSION_PURGE_INTERVAL = 60.0
#: Seconds between batched writes of queued audit events.
AUDIT_FLUSH_INTERVAL = 1.0
#: The admin user created on first start ("admin" itself is a reserved tunnel name).
BOOTSTRAP_ADMIN = "owner"


@dataclass
class Bootstrap:
    """Printed once on first start: the admin's token is shown nowhere else."""

    admin: str
    token: str


class RelayService:
    #: Where store reads run: the loop (SQLite) or reader threads (PostgreSQL); set by open_store.
    reads: StoreReads

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry(config.node)
        self._stream_ssh: StreamListener | None = None  # SSH over WebSocket's way in
        self.aliases = AliasTable()  # TCP aliases: the SSH side serves them, the dashboard lists them
        self._stop = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._ssh: asyncssh.SSHAcceptor | None = None
        self.ssh_connections = SshConnections()
        self._lock = DataDirLock(config.data_dir)
        self.store: Store | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self.node: ClusterNode | None = None  # this node's place in a cluster (None: a single relay)
        self.hops: HopServer | None = None
        self._link: asyncio.AbstractServer | None = None
        self.cluster_secret = ""
        #: Store writes off the event loop (opened with the store, in its own thread).
        self.writer: StoreWriter | None = None
        self.proxy: Proxy | None = None
        self.bootstrap: Bootstrap | None = None
        self.host_fingerprint = ""
        self.http_port = 0
        self.https_port: int | None = None
        self.ssh_port = 0
        self.public: PublicUrl | None = None
        self.audit: AuditLog | None = None
        self.meter: Meter | None = None
        self.metrics_address = ""  # ADDR:PORT once the metrics listener is up
        self._metrics_runner: web.AppRunner | None = None
        self._dashboard_runner: web.AppRunner | None = None

    def open_store(self) -> Store:
        """Data dir, lock, store and host key; creates the first admin on an empty store. On the
        event loop's thread, before it serves: the only store work the loop ever does itself."""
        cfg = self.config
        ensure_data_dir(cfg.data_dir)
        self._lock.acquire()
        recorded = recorded_store(cfg.data_dir)
        if recorded and cfg.store_url is None:
            from .store.postgres import redact

            raise StoreError(
                f"{cfg.data_dir} is a cluster node's data dir (its store: {redact(recorded)}); "
                f"serve it with --store, or remove {cfg.data_dir / STORE_URL_FILE} to serve its own "
                "SQLite store"
            )
        store = Store.at(cfg.data_dir, cfg.store_url)
        self.store = store
        if store.clustered:
            self.cluster_secret = cluster_setup.check_joining(store, cfg.node)
        if cfg.store_url and cfg.store_url != recorded:
            record_store(cfg.data_dir, cfg.store_url)
        self.reads = StoreReads(store)
        self.host_key = hostkey.for_store(store, cfg.data_dir)
        self.host_fingerprint = hostkey.fingerprint(self.host_key)
        if store.count_users() == 0:
            try:
                store.add_user(BOOTSTRAP_ADMIN, admin=True)
            except Conflict:  # another node of the cluster, starting at the same moment, made it
                pass
            else:
                _, token = store.create_token(BOOTSTRAP_ADMIN, label="first start")
                self.bootstrap = Bootstrap(BOOTSTRAP_ADMIN, token)
        store.clear_live(cfg.node)
        store.record_relay_domain(cfg.domain)
        self.registry.subscribe(self._on_registry_change)
        return store

    def _on_registry_change(self, host: str, tunnel: Tunnel | None) -> None:
        # Queued, never awaited: the live table is informational (``relay tunnels``), and a store
        # held by another process must not stall the loop; failures are logged by the writer.
        writer, node = self._writer(), self.config.node
        if tunnel is None:
            writer.submit(lambda store: store.drop_live(host, node), "drop_live")
            writer.submit(lambda store: store.record_seen(host), "record_seen")
        else:
            user_id, client, since = tunnel.user_id, tunnel.client, tunnel.since
            writer.submit(lambda store: store.put_live(host, user_id, client, since, node), "put_live")
            writer.submit(lambda store: store.record_seen(host, client=client, at=since), "record_seen")

    def _open_ssh(self, transport: asyncio.Transport) -> asyncio.Protocol:
        """SSH over WebSocket: a connection of the same SSH server, on the bridge's transport."""
        if self._stream_ssh is None:  # still starting: the WebSocket closes at once, the client retries
            raise ConnectionRefusedError("the SSH server is starting")
        return self._stream_ssh.accept(transport)

    def _alias_rows(self, user_id: int) -> list[dict[str, object]]:
        assert self.public is not None
        domain, port = self.public.domain, self.ssh_port
        return [
            a.as_json(domain=domain, ssh_port=port)
            for a in sorted(self.aliases.for_user(user_id), key=lambda a: a.key)
        ]

    def _on_alias_change(self, key: str, alias: Alias | None) -> None:
        # Aliases share the live table with tunnels (``relay tunnels``), keyed HOST:PORT: a key no
        # HTTP host can have. They have no offline page, so no last-seen time is kept.
        writer, node = self._writer(), self.config.node
        if alias is None:
            writer.submit(lambda store: store.drop_live(key, node), "drop_live")
        else:
            user_id, client, since = alias.user_id, alias.client, alias.since
            writer.submit(lambda store: store.put_live(key, user_id, client, since, node), "put_live")

    def _writer(self) -> StoreWriter:
        if self.writer is None:
            self.writer = StoreWriter(self.config.data_dir, self.config.store_url)
        return self.writer

    async def start(self) -> None:
        store = self.store or self.open_store()
        cfg = self.config
        lim = cfg.limits
        # Before any listener opens: a visitor may connect the moment one does (a restart under load).
        wheel = await self._client_wheel()
        # Visitors and not-yet-logged-in SSH clients are capped; 1024 more for logged-in clients,
        # the store and the listeners.
        have, want = raise_fd_limit(lim.http_max_connections + lim.ssh_max_unauthenticated + 1024)
        if have < want:
            emit(log, logging.WARNING, "limits.fd", open_files=have, wanted=want)
        loop = asyncio.get_running_loop()
        http = await loop.create_server(self._visitors("http"), cfg.bind, cfg.http_port, reuse_address=True)
        self._servers.append(http)
        self.http_port = http.sockets[0].getsockname()[1]
        if cfg.https_port is not None:
            assert cfg.tls_cert is not None and cfg.tls_key is not None
            certs = CertificateSet(cfg.tls_cert, cfg.tls_key, cfg.tls_dir)
            https = await loop.create_server(
                self._visitors("https"),
                cfg.bind,
                cfg.https_port,
                ssl=certs.default,
                # A TLS handshake that drags on is a slowloris before the head: same deadline.
                ssl_handshake_timeout=lim.http_head_timeout,
                reuse_address=True,
            )
            self._servers.append(https)
            self.https_port = https.sockets[0].getsockname()[1]
        self.public = public = cfg.resolved_public_url(self.http_port, self.https_port)
        self.audit = AuditLog(self._write_audit, max_pending=lim.audit_max_pending)
        self.inspector = Inspector(
            rows_per_tunnel=lim.inspector_rows_per_tunnel, max_tunnels=lim.inspector_max_tunnels
        )
        self.registry.subscribe(self.audit.on_registry_change)
        if cfg.metrics_bind is not None:
            self.meter = Meter()
        origin = public.relay_origin
        self._writer().submit(lambda store: store.record_relay_origin(origin), "record_relay_origin")
        limiter = FailureLimiter(lim.auth_failure_limit, lim.auth_failure_window)
        dns = DnsChecker(cfg.dns_server)
        self._dashboard_runner, dashboard, _ = await dashboard_seam.serve(
            dashboard_app(
                DashboardContext(
                    store=store,
                    writer=self._writer(),
                    registry=self.registry,
                    inspector=self.inspector,
                    public=public,
                    limits=lim,
                    dns=dns,
                    audit_log=self.audit,
                    close_tunnel=lambda host: self.ssh_connections.close_tunnel(host, "closed by an admin"),
                    connect_string=lambda user, token: onboarding.connect_string(
                        user, token, public.domain, self.ssh_port, self.host_fingerprint
                    ),
                    aliases=self._alias_rows,
                    reads=self.reads.run,
                )
            ),
            cfg.data_dir,
        )
        node = await self._start_cluster() if store.clustered else None
        self.proxy = Proxy(
            registry=self.registry,
            store=store,
            public=public,
            limiter=limiter,
            trust_proxy=cfg.trust_proxy,
            limits=lim,
            writer=self._writer(),
            audit=self.audit,
            inspector=self.inspector,
            meter=self.meter,
            dashboard=dashboard,
            client_wheel=wheel,
            open_ssh=self._open_ssh,
            reads=self.reads.run,
            route_reads=self.reads.cached_first,
            locate=node.tunnel_for if node is not None else None,
        )
        ssh_ctx = SshContext(
            store=store,
            registry=self.registry,
            public=public,
            limiter=limiter,
            connections=self.ssh_connections,
            dns=dns,
            limits=lim,
            writer=self._writer(),
            audit=self.audit,
            inspector=self.inspector,
            meter=self.meter,
            aliases=self.aliases,
            reads=self.reads.run,
            reads_off_loop=self.reads.off_loop,
        )
        ssh_ctx.aliases.subscribe(self._on_alias_change)
        self._ssh = await start_ssh_server(ssh_ctx, cfg.bind, cfg.ssh_port, self.host_key)
        self._stream_ssh = await start_stream_server(ssh_ctx, self.host_key)
        self.ssh_port = ssh_ctx.ssh_port = self._ssh.sockets[0].getsockname()[1]
        endpoint = f"{public.domain}:{self.ssh_port}"  # for the connect strings admin commands print
        self._writer().submit(lambda store: store.record_setting("ssh_endpoint", endpoint), "ssh_endpoint")
        self._listen()
        self.reads.guard_loop()  # from here on, a PostgreSQL query on the loop is an error
        self._stats_task = asyncio.ensure_future(self._write_stats())
        self._recheck_task = asyncio.ensure_future(self._recheck_credentials())
        self._purge_task = asyncio.ensure_future(self._purge_sessions())
        self._upgrades_task = asyncio.ensure_future(self.proxy.watch_upgrades())
        self._audit_task = asyncio.ensure_future(self.audit.run(AUDIT_FLUSH_INTERVAL))
        if cfg.metrics_bind is not None:
            await self._start_metrics(*cfg.metrics_bind)

    def _listen(self) -> None:
        """A cluster node follows other nodes' changes (LISTEN/NOTIFY) to keep its caches and its
        route table true; each new listening connection reloads the routes (notices are lost
        while it is down)."""
        store, url, node = self.store, self.config.store_url, self.node
        if store is None or url is None or node is None:
            return
        from .store.changes import ChangeFeed, listen  # psycopg: a cluster only
        from .store.cluster import ROUTES_CHANNEL
        from .store.postgres import PostgresEngine, connect_string

        engine = store.engine
        assert isinstance(engine, PostgresEngine)
        engine.feed = feed = ChangeFeed(grace=self.config.limits.store_outage_grace)
        self._listen_task = asyncio.ensure_future(
            listen(
                connect_string(url),
                feed,
                channels={ROUTES_CHANNEL: node.on_route_notice},
                on_connect=node.reload,
                where=engine.where,
            )
        )

    async def _start_cluster(self) -> ClusterNode:
        """This node's link listener (at --cluster-address), its row in the store, its heartbeat."""
        cfg, store = self.config, self.store
        assert store is not None and cfg.cluster_address is not None
        secret = self.cluster_secret.encode()
        opener = HopOpener(me=cfg.node, secret=secret, source=cfg.cluster_address[0])
        self.node = node = ClusterNode(
            name=cfg.node,
            store=store,
            reads=self.reads.run,
            registry=self.registry,
            close_tunnel=self.ssh_connections.close_tunnel,
            open_hop=opener.opener,
        )
        self.hops = HopServer(
            me=cfg.node,
            secret=secret,
            registry=self.registry,
            node_addresses=lambda: [n.address for n in node.nodes.values() if n.name != cfg.node],
            stall=cfg.limits.stream_idle_timeout,
            refresh_nodes=node.refresh_nodes,
        )
        host, port = cfg.cluster_address
        link = await asyncio.get_running_loop().create_server(
            self.hops.protocol, host, port, reuse_address=True
        )
        self._link = link  # closed after the drain: other nodes' visitors still reach our tunnels
        bound = link.sockets[0].getsockname()
        node.address = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
        store.register_node(cfg.node, node.address, node.incarnation)  # before the loop is guarded
        node.nodes = {n.name: n for n in store.nodes()}
        node.routes = store.routes()
        emit(log, logging.INFO, "cluster.joined", node=cfg.node, address=node.address, nodes=len(node.nodes))
        self._node_task = asyncio.ensure_future(node.run())
        return node

    @staticmethod
    async def _client_wheel() -> client_wheel.Wheel | None:
        """The client this relay serves at /_relay/client (built off the loop: it reads files)."""
        try:
            wheel = await asyncio.to_thread(client_wheel.locate)
        except (client_wheel.WheelUnavailable, OSError) as exc:
            emit(log, logging.WARNING, "client.unavailable", error=str(exc))
            return None
        emit(log, logging.INFO, "client.served", wheel=wheel.filename, sha256=wheel.sha256)
        return wheel

    async def _start_metrics(self, address: str, port: int) -> None:
        """Prometheus metrics on their own listener (never a visitor port)."""
        assert self.meter is not None and self.proxy is not None and self.store is not None
        registry = CollectorRegistry(auto_describe=False)
        hosts = HostTotals(self.registry, max_hosts=self.config.limits.metrics_max_tunnels)
        for tunnel in self.registry.all():
            hosts.on_registry_change(tunnel.host, tunnel)
        upgrades, portal = self.proxy.upgrades, self.proxy.portal
        registry.register(
            RelayCollector(
                self.meter,
                hosts,
                ssh_connections=lambda: len(self.ssh_connections),
                websockets=lambda: len(upgrades),
                served=portal.serves,
            )
        )
        self._metrics_runner = runner = web.AppRunner(metrics_app(registry, self.reads.run), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, address, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0]
        self.metrics_address = f"{bound[0]}:{bound[1]}"

    def _write_audit(self, events: list[Event]) -> None:
        self._writer().submit(partial(write_batch, events=events), "audit")

    def _visitors(self, scheme: str) -> Callable[[], VisitorStream]:
        """A listener's protocol factory: each visitor connection is served by a task of its own,
        kept referenced on its stream."""
        limit = self.config.limits.http_max_head_bytes

        def accepted(stream: VisitorStream) -> None:
            if self.proxy is None:  # faster than start-up (the listener opens first): retry soon
                stream.close()
                return
            stream.task = asyncio.get_running_loop().create_task(self.proxy.serve(stream, scheme))

        return lambda: VisitorStream(accepted, limit=limit)

    async def _write_stats(self) -> None:
        while True:
            await asyncio.sleep(LIVE_STATS_INTERVAL)
            assert self.store is not None
            rows = [(t.host, t.bytes_in, t.bytes_out) for t in self.registry.all()]
            if rows:
                write = partial(Store.update_live_bytes, rows=rows, node=self.config.node)
                self._writer().submit(write, "update_live_bytes")

    async def _purge_sessions(self) -> None:
        """Expired sessions are refused at once; their rows go here, on a timer, not per sign-in."""
        while True:
            await asyncio.sleep(SESSION_PURGE_INTERVAL)
            self._writer().submit(lambda store: store.purge_expired_sessions(), "purge_expired_sessions")
            if self.node is not None:
                self._writer().submit(lambda store: store.purge_sso(), "purge_sso")
            lim = self.config.limits
            before, rows = time.time() - lim.audit_retention, lim.audit_max_rows
            self._writer().submit(partial(Store.purge_audit, before=before, max_rows=rows), "purge_audit")

    async def _recheck_credentials(self) -> None:
        while True:
            await asyncio.sleep(CREDENTIAL_RECHECK_INTERVAL)
            store = self.store
            assert store is not None
            await self.ssh_connections.recheck(store, self.config.domain, self.reads.run)
            try:
                shared = await self.reads.run(partial(_shares_of, store, jump_hosts(self.aliases)))
                closed = recheck_jumps(self.aliases, shared)
            except STORE_ERRORS as exc:  # the next pass retries; open jumps stay until then
                emit(log, logging.WARNING, "alias.recheck_failed", error=exc)
                continue
            if closed:
                emit(log, logging.INFO, "alias.jumps_closed", count=closed, why="no longer shared")

    def request_stop(self) -> None:
        self._stop.set()

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT stop the relay cleanly. Installed before "ready" is printed, so a supervisor
        that signals as soon as it reads that line gets a clean stop, not a kill."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run_until_stopped(self) -> None:
        self.handle_signals()
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Fixed order: stop accepting; finish in-flight requests (≤ 30 s); tell SSH clients; close."""
        emit(log, logging.INFO, "relay.stopping")
        for server in self._servers:
            server.close()
        if self._ssh is not None:
            self._ssh.close()
        if self._stream_ssh is not None:
            self._stream_ssh.close()  # and no new SSH over WebSocket either
        if self.proxy is not None:
            await self.proxy.drain(self.config.limits.shutdown_grace)
        if self._link is not None:  # hops in flight were part of that drain's grace
            self._link.close()
        if self._dashboard_runner is not None:  # its event streams end at once (they are not waited for)
            await self._dashboard_runner.cleanup()
        await self.ssh_connections.close_all("relay is shutting down; reconnect in a moment", wait=5.0)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        for task_name in (
            "_stats_task", "_recheck_task", "_purge_task", "_upgrades_task", "_audit_task", "_listen_task",
            "_node_task",
        ):  # fmt: skip
            task = getattr(self, task_name, None)
            if task is not None:
                task.cancel()
        if self.audit is not None:
            for tunnel in self.registry.all():  # their close events, before the last batch
                self.audit.on_registry_change(tunnel.host, None)
            self.audit.flush()
        if self.hops is not None:
            self.hops.close()
        if self.store is not None:
            node = self.config.node
            if self.node is not None:  # the other nodes forget this one at once (not in 10 s)
                incarnation = self.node.incarnation
                self._writer().submit(lambda store: store.leave(node, incarnation), "leave")
            self._writer().submit(lambda store: store.clear_live(node), "clear_live")
            self._writer().close()  # what was queued is written first
            self.reads.close()
            self.store.close()
        self._lock.release()
        sys.stdout.flush()


def _shares_of(store: Store, hosts: set[str]) -> dict[str, frozenset[int]]:
    return {host: store.shared_with(host) for host in hosts}
