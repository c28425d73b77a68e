"""The front's way to the dashboard: a Unix socket in the data dir, opened per request like a tunnel
channel (so the dashboard's pages, forms and event stream go through the same forwarding code, with
the same framing rules, as any tunnel's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from aiohttp import web

from ..socketstream import SocketStream
from ..tunnels import Stream, Tunnel

SOCKET_NAME = "dashboard.sock"


class _Socket(SocketStream):
    def buffered(self) -> int:
        """Never "nothing buffered": a dashboard connection is not kept for another request."""
        return 1


async def _open(path: Path) -> Stream:
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_unix_connection(lambda: _Socket(limit=2**16), str(path))
    return Stream(stream, stream)


async def serve(app: web.Application, data_dir: Path) -> tuple[web.AppRunner, Tunnel, Path]:
    """Start ``app`` on the data dir's socket (0600: only the relay's user connects); returns its
    runner and the pseudo-tunnel the front forwards to."""
    path = data_dir / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a previous run's (the data dir lock says no relay runs on it now)
    # The front already drained its requests when this runner is cleaned up; what is left is event
    # streams, which end with the relay (a browser reconnects to the next one).
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    old = os.umask(0o177)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old)
    path.chmod(0o600)

    async def opener() -> Stream:
        return await _open(path)

    return runner, Tunnel(host="", user_id=0, user_name="", client="dashboard", opener=opener), path
