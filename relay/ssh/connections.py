"""The set of live SSH connections, and what is done to all of them: closing those whose credential or
custom domain went away, and closing every one at shutdown. The service calls these; nothing else
reaches into a connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import asyncssh

from ..errors import StoreError
from ..logfmt import emit
from ..names import HostKind, classify_host
from ..store import Store
from ..storereads import RunReads, inline

if TYPE_CHECKING:
    from .server import RelaySSHServer

log = logging.getLogger(__name__)


class SshConnections:
    def __init__(self) -> None:
        self._all: set[RelaySSHServer] = set()

    def add(self, conn: RelaySSHServer) -> None:
        self._all.add(conn)

    def discard(self, conn: RelaySSHServer) -> None:
        self._all.discard(conn)

    def __iter__(self) -> Iterator[RelaySSHServer]:
        return iter(list(self._all))

    def __len__(self) -> int:
        return len(self._all)

    async def recheck(self, store: Store, relay_domain: str, reads: RunReads = inline) -> None:
        """Close connections whose token was revoked or expired, or whose key or user was removed, and
        tunnels on custom domains no longer verified for their user. The store is read through
        ``reads`` (off the loop on PostgreSQL); what it cannot answer closes nothing."""
        logged_in = [ssh for ssh in self if ssh.user is not None and ssh.conn is not None]
        custom = [
            (ssh, tunnel)
            for ssh in self
            for tunnel in list(ssh.tunnels)
            if classify_host(tunnel.host, relay_domain) is HostKind.CUSTOM
        ]
        credentials = {ssh.user.credential for ssh in logged_in if ssh.user is not None}
        owners, alive = await reads(lambda: _answers(store, {t.host for _, t in custom}, credentials))
        for ssh, tunnel in custom:
            if tunnel.host in owners and owners[tunnel.host] != tunnel.user_id and tunnel in ssh.tunnels:
                emit(log, logging.INFO, "tunnel.domain_unverified", peer=ssh.peer, host=tunnel.host)
                ssh.drop_tunnel(tunnel, "the custom domain was removed")
        for ssh in logged_in:
            user = ssh.user
            if user is None or ssh.conn is None or alive.get(user.credential, True):
                continue
            # A token id or key id is logged, never a secret.
            emit(
                log,
                logging.INFO,
                "ssh.credential_revoked",
                peer=ssh.peer,
                user=user.name,
                credential=user.credential,
            )
            ssh.notify("your token or key was revoked; closing")
            ssh.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "credential revoked")

    def close_tunnel(self, host: str, reason: str) -> bool:
        """Close the live tunnel on ``host`` (its client is told ``reason``); False if none was."""
        for ssh in self:
            for tunnel in list(ssh.tunnels):
                if tunnel.host == host:
                    emit(log, logging.INFO, "tunnel.closed_by_admin", peer=ssh.peer, host=host)
                    ssh.drop_tunnel(tunnel, reason)
                    return True
        return False

    async def close_all(self, reason: str, wait: float) -> None:
        """Tell every client ``reason`` and disconnect; wait up to ``wait`` seconds for them to go."""
        for ssh in self:
            ssh.notify(reason)
            if ssh.conn is not None:
                ssh.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)
        if self._all:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._gone(), wait)

    async def _gone(self) -> None:
        # Polling is enough: it runs once, at shutdown, bounded by the caller's timeout.
        while self._all:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _answers(
    store: Store, hosts: set[str], credentials: set[str]
) -> tuple[dict[str, int | None], dict[str, bool]]:
    """Who owns each custom domain and which credentials still hold, as far as the store answers:
    a question it cannot answer is left out (and closes nothing)."""
    owners: dict[str, int | None] = {}
    for host in hosts:
        try:
            owners[host] = store.verified_domain_owner(host)
        except StoreError:
            break
    alive: dict[str, bool] = {}
    for credential in credentials:
        try:
            alive[credential] = store.credential_alive(credential)
        except StoreError:
            continue
    return owners, alive
