"""Opening one jump through a TCP alias: a ``forwarded-tcpip`` channel back to the alias's client,
spliced to the user's ``direct-tcpip`` channel once asyncssh confirms it. asyncssh errors are
translated here, on the SSH side, into the refusal the user's ssh prints."""

from __future__ import annotations

import asyncssh

from .aliases import Alias, Splice


async def open_jump(alias: Alias, user_id: int, orig_host: str, orig_port: int) -> Splice:
    """The session for the user's channel, its peer already connected to the alias's client
    (``alias.connections`` was counted by the caller; given back here if the open fails)."""
    inbound = Splice(alias, inbound=True, user_id=user_id)
    outbound = Splice(alias, inbound=False)
    inbound.peer, outbound.peer = outbound, inbound
    try:
        if alias.closed:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "the alias's client is gone")
        await alias.conn.create_connection(
            lambda: outbound, alias.listen_host, alias.port, orig_host, orig_port
        )
    except asyncssh.ChannelOpenError as exc:
        alias.connections -= 1
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"{alias.key}: its client refused the connection: {exc.reason}"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        alias.connections -= 1
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"{alias.key}: its client is gone ({exc})"
        ) from None
    alias.splices.add(inbound)
    return inbound
