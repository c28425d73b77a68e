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

    def recheck(self, store: Store, relay_domain: str) -> None:
        """Close connections whose token was revoked or expired, or whose key or user was removed, and
        tunnels on custom domains no longer verified for their user. A busy store closes nothing."""
        self._recheck_domains(store, relay_domain)
        for ssh in self:
            user = ssh.user
            if user is None or ssh.conn is None:
                continue
            try:
                alive = store.credential_alive(user.credential)
            except StoreError:
                continue
            if not alive:
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

    def _recheck_domains(self, store: Store, relay_domain: str) -> None:
        for ssh in self:
            for tunnel in list(ssh.tunnels):
                if classify_host(tunnel.host, relay_domain) is not HostKind.CUSTOM:
                    continue
                try:
                    owner = store.verified_domain_owner(tunnel.host)
                except StoreError:
                    return
                if owner != tunnel.user_id:
                    emit(log, logging.INFO, "tunnel.domain_unverified", peer=ssh.peer, host=tunnel.host)
                    ssh.drop_tunnel(tunnel, "the custom domain was removed")

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
