"""Upgraded connections in flight (WebSockets), each with the check that let it in.

Routing and auth run per request, but a WebSocket is one request that may live for days: a kernel
socket opened with a share link would outlive the link's revocation or expiry. So every open upgrade
is re-checked on a timer, with the same routing and auth as a new request, and closed once it would
be refused (DESIGN §3.5: a revoked link's open kernel WebSocket is closed within 10 s).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..logfmt import emit
from ..store import STORE_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Open:
    still_allowed: Callable[[], bool]
    close: Callable[[], None]
    host: str


class OpenUpgrades:
    def __init__(self) -> None:
        self._open: dict[int, _Open] = {}
        self._ids = itertools.count()

    def add(self, still_allowed: Callable[[], bool], close: Callable[[], None], host: str) -> int:
        key = next(self._ids)
        self._open[key] = _Open(still_allowed, close, host)
        return key

    def discard(self, key: int) -> None:
        self._open.pop(key, None)

    def __len__(self) -> int:
        return len(self._open)

    def recheck(self) -> int:
        """Close every upgrade that would be refused now; returns how many. A store that cannot
        answer closes nothing (the next new request gets its 503; open sockets are not cut for it)."""
        closed = 0
        for key, entry in list(self._open.items()):
            try:
                allowed = entry.still_allowed()
            except STORE_ERRORS as exc:
                emit(log, logging.WARNING, "upgrade.recheck_failed", host=entry.host, error=exc)
                return closed
            if not allowed:
                self._open.pop(key, None)
                entry.close()
                emit(log, logging.INFO, "upgrade.closed", host=entry.host, reason="access ended")
                closed += 1
        return closed

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.recheck()
            except Exception:  # a bug in one check must not end the timer for every other socket
                log.exception("re-checking open WebSockets failed")
