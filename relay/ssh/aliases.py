"""TCP aliases (DESIGN §3.8): ``ssh -R NAME:PORT:localhost:LOCALPORT`` with a PORT other than 80/443
registers ``NAME.DOMAIN:PORT`` for its owner. No port is bound on the relay: an alias is reached only
through the relay's own SSH, by a ``direct-tcpip`` channel (``ssh -J``, ``-L``, ``-W``) from a user
allowed on the host, which is spliced to a ``forwarded-tcpip`` channel opened back to the alias's
client. The bytes are end to end (the inner SSH to a runtime's sshd is encrypted past the relay)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncssh

from ..sharing import may_jump

#: ``listener(key, alias_or_None)`` after each change (the live table of ``relay tunnels``).
AliasListener = Callable[[str, "Alias | None"], None]


@dataclass(eq=False)
class Alias:
    """One live TCP alias, served by one SSH connection's reverse forward."""

    host: str
    port: int
    user_id: int
    user_name: str
    client: str  # "ip:port" of the SSH client holding the forward
    conn: asyncssh.SSHServerConnection = field(repr=False)
    listen_host: str  # as the client asked (its forward is matched on it)
    since: float = field(default_factory=time.time)
    connections: int = 0  # jump connections open through it now
    bytes_in: int = 0  # towards the alias's client
    bytes_out: int = 0
    closed: bool = False
    #: The open jump channels (closed with the alias's connection, or on a take-over).
    splices: set[Splice] = field(default_factory=set, repr=False)

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    def as_json(self, *, domain: str, ssh_port: int) -> dict[str, object]:
        """The alias as ``tunnels --json`` and the dashboard list it, with the command that reaches it."""
        return {
            "alias": self.key,
            "host": self.host,
            "port": self.port,
            "user": self.user_name,
            "client": self.client,
            "since": round(self.since, 3),
            "connections": self.connections,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "hint": jump_hint(self, domain=domain, ssh_port=ssh_port),
        }


class AliasTable:
    """Live aliases by ``HOST:PORT``. In memory, like the tunnel registry."""

    def __init__(self) -> None:
        self._by_key: dict[str, Alias] = {}
        self._listeners: list[AliasListener] = []

    def subscribe(self, listener: AliasListener) -> None:
        self._listeners.append(listener)

    def add(self, alias: Alias) -> Alias | None:
        """Register ``alias``; returns the one it displaced (same key), now closed."""
        old = self._by_key.get(alias.key)
        if old is not None:
            old.closed = True
        self._by_key[alias.key] = alias
        for listener in self._listeners:
            listener(alias.key, alias)
        return old

    def remove(self, alias: Alias) -> None:
        alias.closed = True
        if self._by_key.get(alias.key) is alias:
            del self._by_key[alias.key]
            for listener in self._listeners:
                listener(alias.key, None)

    def get(self, host: str, port: int) -> Alias | None:
        return self._by_key.get(f"{host}:{port}")

    def for_user(self, user_id: int) -> list[Alias]:
        return [a for a in self._by_key.values() if a.user_id == user_id]

    def all(self) -> list[Alias]:
        return list(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def jump_hosts(aliases: AliasTable) -> set[str]:
    """The hosts of aliases with open jumps (whose shares :func:`recheck_jumps` needs)."""
    return {alias.host for alias in aliases.all() if alias.splices}


def recheck_jumps(aliases: AliasTable, shared_with: Mapping[str, frozenset[int]]) -> int:
    """Close the open jumps whose user may no longer reach the alias (a share revoked or expired),
    as open WebSockets are re-routed: the same rule as a new jump. ``shared_with``: the users each
    of :func:`jump_hosts` is shared with now. Returns how many were closed."""
    closed = 0
    for alias in aliases.all():
        if not alias.splices or alias.host not in shared_with:
            continue
        shared = shared_with[alias.host]
        for splice in list(alias.splices):
            if not may_jump(user_id=splice.user_id, owner_id=alias.user_id, shared=shared):
                splice.close()
                closed += 1
    return closed


class Splice(asyncssh.SSHTCPSession[bytes]):
    """One side of a jump: bytes from this channel go to the peer's, with the SSH windows as the
    backpressure (a slow side pauses reading on the other). Whatever closes one side closes both."""

    def __init__(self, alias: Alias, *, inbound: bool, user_id: int = 0) -> None:
        self.alias = alias
        self.user_id = user_id  # who opened the jump (the inbound side), rechecked while it is open
        self.inbound = inbound  # the jump user's direct-tcpip channel (else the client's forward)
        self.peer: Splice | None = None
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._pending: list[bytes] = []  # from this side before the peer's channel is open
        self._eof_pending = False

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        peer = self.peer
        if peer is not None and peer._pending:
            for data in peer._pending:
                chan.write(data)
            peer._pending.clear()
            if peer.chan is not None:
                peer.chan.resume_reading()
        if peer is not None and peer._eof_pending:
            chan.write_eof()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.inbound:
            self.alias.bytes_in += len(data)
        else:
            self.alias.bytes_out += len(data)
        peer = self.peer
        if peer is not None and peer.chan is not None:
            peer.chan.write(data)
        else:
            # The runtime's sshd speaks first, before the jump channel is confirmed: hold its banner.
            self._pending.append(data)
            if self.chan is not None:
                self.chan.pause_reading()

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.chan is not None:
            peer.chan.write_eof()
        else:
            self._eof_pending = True
        return True  # half-close, as TCP does: the other direction may still be sending

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.chan = None
        peer = self.peer
        if peer is not None and peer.chan is not None:
            peer.chan.close()
        if self.inbound:
            self.alias.connections -= 1
            self.alias.splices.discard(self)

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.close()


def jump_hint(alias: Alias, *, domain: str, ssh_port: int) -> str:
    """The line a user runs to reach ``alias`` (printed by the ``-R`` session): ``ssh -J`` for an
    SSH port, ``ssh -L`` for anything else."""
    name = alias.host.removesuffix("." + domain)
    relay = f"{alias.user_name}@{domain}"
    if alias.port == 22:
        return f"ssh -J {relay}:{ssh_port} USER@{name}"
    return f"ssh -N -L {alias.port}:{name}:{alias.port} -p {ssh_port} {relay}"
