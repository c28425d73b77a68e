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
from ..storereads import RunReads, inline

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

    async def recheck(self, reads: RunReads = inline) -> int:
        """Close every upgrade that would be refused now; returns how many. The checks read the
        store (through ``reads``: off the loop on PostgreSQL); a store that cannot answer closes
        nothing (the next new request gets its 503; open sockets are not cut for it)."""
        entries = list(self._open.items())
        try:
            verdicts = await reads(lambda: [(key, entry.still_allowed()) for key, entry in entries])
        except STORE_ERRORS as exc:
            emit(log, logging.WARNING, "upgrade.recheck_failed", hosts=len(entries), error=exc)
            return 0
        closed = 0
        for key, allowed in verdicts:
            entry = self._open.pop(key, None) if not allowed else None
            if entry is not None:
                entry.close()
                emit(log, logging.INFO, "upgrade.closed", host=entry.host, reason="access ended")
                closed += 1
        return closed

    async def run(self, interval: float, reads: RunReads = inline) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recheck(reads)
            except Exception:  # a bug in one check must not end the timer for every other socket
                log.exception("re-checking open WebSockets failed")
