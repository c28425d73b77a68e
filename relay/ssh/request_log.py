"""Request lines on an SSH channel: the live inspector's rows as text, for the person who typed
``ssh -R`` (a session with a pty) and for ``ssh USER@relay -- log [HOST]``, which follows until the
channel closes. A channel that does not read gets no more lines once ``backlog`` bytes wait unsent;
the next line that fits says how many were skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncssh

from ..errors import RelayError
from ..inspector import Inspector, Row, line
from ..sharing import owned_host
from ..store import Store, User
from ..tunnels import Registry

EXEC_LOG = "log"
LOG_USAGE = "usage: log [NAME|DOMAIN]"


#: Seconds request lines are gathered before they are written: under load one SSH packet carries
#: many lines (a packet per request would cost the relay and the user's ssh as much as the request).
FLUSH_DELAY = 0.1


class LineFeed:
    """Writes rows to ``chan`` as lines, in batches, never buffering more than ``backlog`` bytes."""

    def __init__(
        self, chan: asyncssh.SSHServerChannel[str], *, nl: str, backlog: int, with_host: bool
    ) -> None:
        self.chan = chan
        self.nl = nl
        self.backlog = backlog
        self.with_host = with_host
        self.skipped = 0
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, row: Row) -> None:
        if self.chan.is_closing():
            return
        if self.chan.get_write_buffer_size() + self._size > self.backlog:
            self.skipped += 1
            return
        text = line(row, with_host=self.with_host) + self.nl
        self._lines.append(text)
        self._size += len(text)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        if self.chan.is_closing():
            return
        if self.skipped:
            lines.insert(0, f"relay: {self.skipped} request lines skipped (not read in time){self.nl}")
            self.skipped = 0
        if lines:
            self.chan.write("".join(lines))

    def replayed(self) -> None:
        """Write what was gathered now (the replay of ``log``, before following)."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()


def log_hosts(
    argv: list[str], *, user: User, store: Store, registry: Registry, relay_domain: str
) -> tuple[Callable[[str], bool], str | None]:
    """Which hosts ``log [HOST]`` follows, and HOST: HOST if it is the caller's (an admin's: any),
    else every live tunnel of the caller as they come and go. :class:`RelayError` says why not."""
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        raise RelayError(LOG_USAGE, status=2)
    if not argv:

        def mine(host: str) -> bool:
            tunnel = registry.get(host)
            return tunnel is not None and tunnel.user_id == user.id

        return mine, None
    host, owner = owned_host(argv[0], store=store, relay_domain=relay_domain)
    if owner is None:
        raise RelayError(f"{host} is not owned by anyone")
    if owner != user.id and not user.is_admin:
        raise RelayError(f"{host} is not yours; only its owner can follow its requests")
    return (lambda candidate: candidate == host), host


def replay(inspector: Inspector, hosts: list[str], feed: LineFeed, last: int) -> None:
    """The last ``last`` rows of ``hosts``, oldest first, before following."""
    rows = sorted((r for h in hosts for r in inspector.recent(h, last)), key=lambda r: r.at)
    for row in rows[-last:]:
        feed(row)
    feed.replayed()
