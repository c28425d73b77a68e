"""The SSH side: authenticates users, turns ``-R NAME:80:...`` into registry entries without binding
any port, and opens a ``forwarded-tcpip`` channel back to the client for each proxied stream.

Everything a stock OpenSSH client can ask for besides that (``-L``, ``-D``, ``-W``, shells, commands,
subsystems, agent and X11 forwarding, real port binds) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from ssh_tuning import tune_connection

from ..admission import Gate
from ..audit import AuditLog
from ..auth import FailureLimiter
from ..config import PublicUrl
from ..dnscheck import DnsChecker
from ..errors import RelayError
from ..inspector import Inspector
from ..limits import Limits
from ..logfmt import emit
from ..metrics import Meter
from ..names import alias_port_refusal, claim_refusal, domain_bind_refusal, jump_host, resolve_bind
from ..protocol import SSH_ENCRYPTION_ALGS, TUNNEL_PORTS
from ..sharing import may_jump
from ..store import STORE_ERRORS, Store, User
from ..storereads import RunReads, inline
from ..storewriter import StoreWriter
from ..tunnels import Registry, Tunnel, UserStreams
from . import stream_server
from .aliases import Alias, AliasTable, Splice
from .channels import channel_opener
from .connections import SshConnections
from .jump import open_jump
from .notices import EXCERPT_CHARS, LogBudget, Notices, excerpt
from .session import RelaySession
from .stream_server import StreamListener

log = logging.getLogger(__name__)


@dataclass
class SshContext:
    """What every SSH connection shares: injected once by the service."""

    store: Store
    registry: Registry
    public: PublicUrl
    limiter: FailureLimiter
    connections: SshConnections
    dns: DnsChecker
    writer: StoreWriter
    limits: Limits = field(default_factory=Limits)
    #: Where share changes go (the relay's audit queue); None in tests that build a bare context.
    audit: AuditLog | None = None
    #: The live request inspector: an interactive session and ``log HOST`` stream its lines.
    inspector: Inspector | None = None
    #: Counts refusals for the metrics (None: metrics are off).
    meter: Meter | None = None
    ssh_port: int = 22  # for the commands printed to users; set once the server listens
    #: SSH connections that have not logged in yet (OpenSSH's MaxStartups), in total and per address.
    unauthenticated: Gate = field(init=False)
    #: Live TCP aliases (``-R NAME:PORT`` with PORT not 80/443), reached only by direct-tcpip.
    aliases: AliasTable = field(default_factory=AliasTable)
    #: Channels open to each user's tunnels, all together (http_max_streams_per_user).
    user_streams: UserStreams = field(init=False)
    #: Runs work that reads the store: on the loop (SQLite), in reader threads (PostgreSQL).
    reads: RunReads = inline
    #: True when ``reads`` leaves the loop: a ``-R`` then answers after its checks, not at once.
    reads_off_loop: bool = False

    def __post_init__(self) -> None:
        limits = self.limits
        self.user_streams = UserStreams(limits.http_max_streams_per_user)
        self.unauthenticated = Gate(
            limits.ssh_max_unauthenticated,
            limits.ssh_max_unauthenticated_per_address,
            limits.ssh_max_unauthenticated_per_network,
            limits.ssh_early_drop_unauthenticated,
        )


class AdmissionRefused(Exception):
    """Raised from ``connection_made`` to drop a connection before the SSH handshake."""


class TunnelListener(asyncssh.SSHListener):
    """What ``server_requested`` returns: binds nothing; closing it unregisters the tunnel."""

    def __init__(self, on_close: Callable[[], None], port: int) -> None:
        super().__init__()
        self._on_close = on_close
        self._port = port

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        self._on_close()

    async def wait_closed(self) -> None:
        return None


class RelaySSHServer(asyncssh.SSHServer):
    """One instance per SSH connection."""

    def __init__(self, ctx: SshContext) -> None:
        self.ctx = ctx
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "unknown"
        #: Set only once the connection has authenticated: until then it is nobody's, whatever name
        #: and key it presented (an unsigned "is this key acceptable?" query needs only a public key).
        self.user: User | None = None
        self._candidate: User | None = None  # who the credential being tried belongs to
        self.tunnels: list[Tunnel] = []
        self.aliases: list[Alias] = []
        limits = ctx.limits
        # Refusals and events shown on the session channel, and this connection's share of the log:
        # both bounded, whatever the client sends.
        self.notices = Notices(limits.ssh_max_notices, limits.ssh_max_notice_bytes)
        self.log_budget = LogBudget(limits.ssh_log_burst)
        self.sessions: list[RelaySession] = []
        self.open_sessions = 0  # session channels open now, started or not (capped)
        self.address = "unknown"  # the client's IP: the unit of admission and failure limits
        self._pending_auth = False  # holds a place in ctx.unauthenticated
        self.lost = False
        self._key_refused = False

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self.address = peer[0] if peer else "unknown"
        refusal = self.ctx.unauthenticated.enter(self.address)
        blocked = self.ctx.limiter.retry_after(self.address)
        if refusal is not None or blocked:
            # Refused before even the version string, like OpenSSH's MaxStartups: cheap for us, and
            # those already admitted keep being served. abort() closes the socket now; the raise
            # stops asyncssh before it sends its version (without the abort it would close only
            # on the next loop pass, after answering the client's hello with a KEXINIT).
            why = f"{refusal.value}: connections not yet logged in" if refusal else "too many failures"
            emit(log, logging.WARNING, "ssh.refused", peer=self.peer, why=why)
            if self.ctx.meter is not None:
                self.ctx.meter.refused(f"ssh_{refusal.value}" if refusal else "ssh_failures")
            if refusal is None:
                self.ctx.unauthenticated.leave(self.address)
            conn.abort()
            raise AdmissionRefused(why)
        self._pending_auth = True
        self.ctx.connections.add(self)
        tune_connection(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True  # a -R still waiting for its name's write must not register after this
        if self._pending_auth:
            self._pending_auth = False
            self.ctx.unauthenticated.leave(self.address)
            if self._key_refused:
                # One failure per connection that offered only unknown keys, not one per key: a
                # user whose agent holds several keys is not pushed toward the limit.
                self.ctx.limiter.fail(self.address)
        self.ctx.connections.discard(self)
        for tunnel in self.tunnels:
            self.ctx.registry.remove(tunnel)
            emit(log, logging.INFO, "tunnel.down", peer=self.peer, host=tunnel.host)
        for alias in self.aliases:
            self.ctx.aliases.remove(alias)
            emit(log, logging.INFO, "alias.down", peer=self.peer, alias=alias.key)
        self.aliases.clear()
        if self.user is not None:
            emit(log, logging.INFO, "ssh.disconnected", peer=self.peer, user=self.user.name, error=exc)
        self.tunnels.clear()

    def drop_tunnel(self, tunnel: Tunnel, reason: str) -> None:
        """End one tunnel of this connection (e.g. its custom domain was removed); the rest stay."""
        if tunnel in self.tunnels:
            self.tunnels.remove(tunnel)
        self.ctx.registry.remove(tunnel)
        self.notify(f"{tunnel.host} closed: {reason}")

    def notify(self, message: str) -> None:
        """Tell the person at the client, on every open session (and later sessions)."""
        kept = self.notices.add(message)
        for session in self.sessions:
            session.write_notice(kept)

    # -- auth ----------------------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        return True  # always require authentication; "none" never succeeds

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        client = self.address
        if self.ctx.limiter.retry_after(client):
            emit(log, logging.WARNING, "ssh.auth_failed", peer=self.peer, why="too many failures")
            return False
        store = self.ctx.store
        user = await self.ctx.reads(lambda: store.verify_token(password.strip()))
        if user is None or user.name != username:
            self.ctx.limiter.fail(client)
            # The user name is the client's text (a pasted token is redacted by logfmt).
            emit(log, logging.INFO, "ssh.auth_failed", peer=self.peer, user=username, why="bad token")
            return False
        self._candidate = user
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.ctx.limiter.retry_after(self.address):
            return False
        store, fingerprint = self.ctx.store, str(key.get_fingerprint("sha256"))
        user = await self.ctx.reads(lambda: store.user_for_key(username, fingerprint))
        if user is None:
            self._key_refused = True
            return False
        # Called for the unsigned query as well as for the signed request: only auth_completed,
        # after asyncssh checked the signature, makes this connection the user's.
        self._candidate = user
        return True

    def auth_completed(self) -> None:
        assert self._candidate is not None and self.conn is not None
        self.user = self._candidate
        if self._pending_auth:
            self._pending_auth = False
            self.ctx.unauthenticated.leave(self.address)
        cap = self.ctx.limits.ssh_max_connections_per_user
        mine = sum(1 for c in self.ctx.connections if c.user is not None and c.user.id == self.user.id)
        if mine > cap:
            emit(
                log,
                logging.WARNING,
                "ssh.refused",
                peer=self.peer,
                user=self.user.name,
                why=f"connection {mine} of this user, cap {cap}",
            )
            self.conn.disconnect(
                asyncssh.DISC_TOO_MANY_CONNECTIONS,
                f"user {self.user.name} already has {cap} connections (the relay's limit); "
                "close one or wait for stale ones to time out",
            )
            self.user = None  # a refused connection counts for nobody while it goes
            return
        emit(log, logging.INFO, "ssh.authenticated", peer=self.peer, user=self.user.name)

    # -- forwards ------------------------------------------------------------------------------

    def server_requested(
        self, listen_host: str, listen_port: int
    ) -> asyncssh.SSHListener | bool | Awaitable[asyncssh.SSHListener | bool]:
        """A ``-R``: registered at once, or (the first claim of a name, a store write) after the
        write, awaited off the event loop; asyncssh accepts either."""
        if self.user is None or self.conn is None:
            return False
        user, conn = self.user, self.conn
        try:
            cap = self.ctx.limits.ssh_max_forwards_per_connection
            if len(self.tunnels) + len(self.aliases) >= cap:
                raise RelayError(f"this connection already holds {cap} tunnels, the relay's limit")
            alias = listen_port not in TUNNEL_PORTS
            if alias:
                limits = self.ctx.limits
                why = alias_port_refusal(
                    listen_port, lowest=limits.tcp_alias_min_port, highest=limits.tcp_alias_max_port
                )
                if why is not None:
                    raise RelayError(why)
            if self.ctx.reads_off_loop:
                return self._bind_off_loop(user, conn, listen_host, listen_port)
            host, new_name = self._bind_target(user, listen_host)
            if new_name is not None:
                return self._claim_then_register(user, conn, new_name, host, listen_host, listen_port)
            return self._register(user, conn, host, listen_host, listen_port)
        except RelayError as exc:
            return self._refuse_forward(listen_host, listen_port, exc)

    async def _bind_off_loop(
        self, user: User, conn: asyncssh.SSHServerConnection, listen_host: str, listen_port: int
    ) -> asyncssh.SSHListener | bool:
        """:meth:`server_requested` when the store is read off the loop (PostgreSQL)."""
        try:
            try:
                host, new_name = await self.ctx.reads(lambda: self._bind_target(user, listen_host))
            except STORE_ERRORS as exc:
                raise RelayError(f"the relay cannot read its store right now: {exc}") from exc
            if new_name is not None:
                return await self._claim_then_register(user, conn, new_name, host, listen_host, listen_port)
            if self.lost:
                return False
            return self._register(user, conn, host, listen_host, listen_port)
        except RelayError as exc:
            return self._refuse_forward(listen_host, listen_port, exc)

    async def _claim_then_register(
        self,
        user: User,
        conn: asyncssh.SSHServerConnection,
        name: str,
        host: str,
        listen_host: str,
        listen_port: int,
    ) -> asyncssh.SSHListener | bool:
        try:
            try:
                claimed = await self.ctx.writer.run(lambda store: store.claim_name(name, user.id))
            except STORE_ERRORS as exc:
                raise RelayError(f"the relay cannot record the name right now: {exc}") from exc
            if not claimed:
                raise RelayError(f"name {name!r} was just claimed by another user")
            if self.lost:  # the connection went while the name was being recorded
                return False
            return self._register(user, conn, host, listen_host, listen_port)
        except RelayError as exc:
            return self._refuse_forward(listen_host, listen_port, exc)

    def _refuse_forward(self, listen_host: str, listen_port: int, exc: RelayError) -> bool:
        assert self.user is not None
        # The bind address and the reason quote the client's text: both are cut short.
        why = excerpt(str(exc), 4 * EXCERPT_CHARS)
        self.notify(f"refused -R {excerpt(listen_host) or '(default)'}:{listen_port}: {why}")
        suppressed = self.log_budget.allow()
        if suppressed is not None:
            emit(
                log,
                logging.INFO,
                "ssh.forward_refused",
                peer=self.peer,
                user=self.user.name,
                bind=f"{excerpt(listen_host)}:{listen_port}",
                why=why,
                suppressed=suppressed or None,
            )
        return False

    def _bind_target(self, user: User, listen_host: str) -> tuple[str, str | None]:
        """The public host a ``-R`` asks for, after the ownership checks (reads only), and the name
        to claim first if nobody owns it yet; RelayError says why it is refused. HTTP tunnels and
        TCP aliases are owned alike."""
        target = resolve_bind(listen_host, default_name=user.name, domain=self.ctx.public.domain)
        store = self.ctx.store
        if target.name is None:
            refusal = domain_bind_refusal(
                target.host, claimant_id=user.id, owner_id=store.verified_domain_owner(target.host)
            )
            if refusal is not None:
                raise RelayError(refusal)
            return target.host, None
        owner = store.name_owner(target.name)
        refusal = claim_refusal(target.name, claimant_id=user.id, owner_id=owner)
        if refusal is not None:
            raise RelayError(refusal)
        return target.host, (target.name if owner is None else None)

    def _register(
        self,
        user: User,
        conn: asyncssh.SSHServerConnection,
        host: str,
        listen_host: str,
        listen_port: int,
    ) -> asyncssh.SSHListener:
        if listen_port not in TUNNEL_PORTS:
            return self._register_alias(user, conn, host, listen_host, listen_port)
        tunnel = Tunnel(
            host=host,
            user_id=user.id,
            user_name=user.name,
            client=self.peer,
            opener=channel_opener(conn, listen_host, listen_port),
            max_channels=self.ctx.limits.ssh_max_channels_per_tunnel,
            user_streams=self.ctx.user_streams,
        )
        displaced = self.ctx.registry.add(tunnel)
        self._taken_over(displaced, lambda conn: conn.tunnels, host)
        self.tunnels.append(tunnel)
        url = self.ctx.public.tunnel_url(host)
        emit(
            log,
            logging.INFO,
            "tunnel.up",
            peer=self.peer,
            user=user.name,
            url=url,
            took_over="yes" if displaced else None,
        )

        def close() -> None:
            if tunnel in self.tunnels:
                self.tunnels.remove(tunnel)
            self.ctx.registry.remove(tunnel)

        return TunnelListener(close, listen_port)

    def _taken_over(
        self, displaced: Tunnel | Alias | None, held: Callable[[RelaySSHServer], list[Any]], what: str
    ) -> None:
        """Whichever connection held ``displaced`` (same host, or same alias) lets it go and is told.
        Its connection stays open (it may serve other names) until it drops or leaves."""
        if displaced is None:
            return
        for other in list(self.ctx.connections):
            if other is not self and displaced in held(other):
                held(other).remove(displaced)
                other.notify(f"{what} was taken over by a new connection from {self.peer}")
        if displaced in held(self):
            held(self).remove(displaced)

    def _register_alias(
        self, user: User, conn: asyncssh.SSHServerConnection, host: str, listen_host: str, port: int
    ) -> asyncssh.SSHListener:
        alias = Alias(host, port, user.id, user.name, self.peer, conn, listen_host)
        displaced = self.ctx.aliases.add(alias)
        self._taken_over(displaced, lambda conn: conn.aliases, alias.key)
        self.aliases.append(alias)
        emit(log, logging.INFO, "alias.up", peer=self.peer, user=user.name, alias=alias.key)

        def close() -> None:
            if alias in self.aliases:
                self.aliases.remove(alias)
            self.ctx.aliases.remove(alias)

        return TunnelListener(close, port)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[Splice]:
        """A ``direct-tcpip`` (``ssh -J``, ``-L``, ``-W``): only to a live alias the user may reach,
        spliced to its client. Anything else is refused before any connection is attempted."""
        user = self.user
        if user is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not logged in")
        host = jump_host(dest_host, domain=self.ctx.public.domain)
        alias = self.ctx.aliases.get(host, dest_port) if host is not None else None
        if alias is not None and self.ctx.reads_off_loop:
            return self._jump_off_loop(user, alias, dest_host, dest_port, orig_host, orig_port)
        try:
            shared = self.ctx.store.shared_with(alias.host) if alias is not None else frozenset()
        except STORE_ERRORS as exc:  # who may reach it is unknown: refused, nothing opened
            raise _store_unreadable(exc) from None
        return self._jump(user, alias, shared, dest_host, dest_port, orig_host, orig_port)

    async def _jump_off_loop(
        self, user: User, alias: Alias, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Splice:
        store = self.ctx.store
        try:
            shared = await self.ctx.reads(lambda: store.shared_with(alias.host))
        except STORE_ERRORS as exc:
            raise _store_unreadable(exc) from None
        return await self._jump(user, alias, shared, dest_host, dest_port, orig_host, orig_port)

    def _jump(
        self,
        user: User,
        alias: Alias | None,
        shared: frozenset[int],
        dest_host: str,
        dest_port: int,
        orig_host: str,
        orig_port: int,
    ) -> Awaitable[Splice]:
        if alias is None or not may_jump(user_id=user.id, owner_id=alias.user_id, shared=shared):
            # The same answer whether the alias is missing or another user's: nothing is revealed.
            self.notify(
                f"refused a connection to {excerpt(dest_host)}:{dest_port}: not a TCP alias you may reach"
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"{excerpt(dest_host)}:{dest_port} is not a TCP alias you may reach; "
                "the relay connects only to its TCP aliases (ssh -R NAME:PORT:...)",
            )
        if alias.connections >= self.ctx.limits.tcp_alias_max_connections:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE,
                f"{alias.key} has {alias.connections} connections open, the relay's limit",
            )
        alias.connections += 1
        emit(log, logging.INFO, "alias.jump", peer=self.peer, user=user.name, alias=alias.key)
        return open_jump(alias, user.id, orig_host, orig_port)

    # -- sessions ------------------------------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[str] | bool:
        if self.open_sessions >= self.ctx.limits.ssh_max_sessions_per_connection:
            return False  # each one costs memory and does nothing useful in numbers
        return RelaySession(self)

    def tunnels_doc(self) -> dict[str, object]:
        assert self.user is not None
        mine = self.ctx.registry.for_user(self.user.id)
        return {
            "user": self.user.name,
            "notices": self.notices.lines(),  # e.g. why a -R on this connection was refused
            "tunnels": [
                {
                    **t.as_json(self.ctx.public.tunnel_url),
                    "this_connection": t in self.tunnels,
                    "public": self.ctx.store.is_public(t.host),
                }
                for t in mine
            ],
            "aliases": [
                {
                    **a.as_json(domain=self.ctx.public.domain, ssh_port=self.ctx.ssh_port),
                    "this_connection": a in self.aliases,
                }
                for a in self.ctx.aliases.for_user(self.user.id)
            ],
        }


def _store_unreadable(exc: Exception) -> asyncssh.ChannelOpenError:
    """Who may reach an alias is unknown: refused, nothing opened."""
    return asyncssh.ChannelOpenError(
        asyncssh.OPEN_CONNECT_FAILED, f"the relay cannot read its store right now: {exc}"
    )


def _options(ctx: SshContext, host_key: asyncssh.SSHKey) -> dict[str, object]:
    """One set of server options for the SSH port and for SSH over WebSocket alike."""
    return {
        "server_host_keys": [host_key],
        "server_version": "Relay",
        "encryption_algs": list(SSH_ENCRYPTION_ALGS),
        "login_timeout": ctx.limits.ssh_login_timeout,
        "keepalive_interval": ctx.limits.ssh_keepalive_interval,
        "keepalive_count_max": ctx.limits.ssh_keepalive_count,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "allow_scp": False,
        "kbdint_auth": False,
        "gss_host": None,
        "line_editor": False,
        "encoding": "utf-8",
        "errors": "replace",
    }


async def start_ssh_server(
    ctx: SshContext, host: str, port: int, host_key: asyncssh.SSHKey
) -> asyncssh.SSHAcceptor:
    return await asyncssh.create_server(
        lambda: RelaySSHServer(ctx), host, port, reuse_address=True, **_options(ctx, host_key)
    )


async def start_stream_server(ctx: SshContext, host_key: asyncssh.SSHKey) -> StreamListener:
    """The same SSH server for connections that arrive as streams, not sockets (SSH over WebSocket):
    same options, caps and limits; each is accounted to its transport's peername, the client's real
    address."""
    return await stream_server.listen(_options(ctx, host_key), lambda: RelaySSHServer(ctx))
