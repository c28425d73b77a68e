"""How a running node learns that another node changed the database: PostgreSQL's LISTEN/NOTIFY.

Every write transaction notifies :data:`CHANGES_CHANNEL`; a node's listener moves its
:class:`ChangeFeed`, and the store's caches (credentials, shares) drop at their next lookup. A
notice is not durable, so whenever the listening connection is lost the feed moves too, and until it
is back the store asks the database's change counter instead. If the database cannot answer, what
is cached keeps serving for :attr:`ChangeFeed.grace` seconds from the last contact (a limit,
``store_outage_grace``), then lookups fail as the database does (503s, never a hang).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import psycopg

from ..errors import StoreError
from ..logfmt import emit

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "relay_changes"
#: Seconds between probes of a quiet listening connection (a dead one is noticed within this + 5 s).
PROBE_EVERY = 2.0


class ChangeFeed:
    def __init__(self, *, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._version = 0
        self._counter = -1
        self._contact = clock()
        self.listening = False

    def version(self, read: Callable[[], int]) -> int:
        """The number the store's caches compare: moved by notices while listening; otherwise the
        database's counter, read through ``read`` (in a reader thread)."""
        if self.listening:
            return self._version
        try:
            counter = read()
        except StoreError:
            if self._clock() - self._contact < self.grace:
                return self._version  # the database is away: serve what is cached, for a while
            raise
        self._contact = self._clock()
        if counter != self._counter:
            self._counter = counter
            self._version += 1
        return self._version

    def notice(self) -> None:
        self._version += 1

    def up(self) -> None:
        self.listening = True
        self._contact = self._clock()
        self._version += 1  # notices may have been missed while away

    def down(self) -> None:
        if self.listening:
            self._contact = self._clock()
        self.listening = False
        self._version += 1


async def listen(
    url: str,
    feed: ChangeFeed,
    *,
    channels: Mapping[str, Callable[[str], None]] | None = None,
    on_connect: Callable[[], Awaitable[None]] | None = None,
    where: str = "",
) -> None:
    """Listen until cancelled, making the connection again with backoff (0.5 s doubling to 10 s).

    ``url`` is a connection string (:func:`relay.store.postgres.connect_string`). ``channels``: more
    channels, and what to do with each notice's payload. ``on_connect`` runs after each connection,
    once listening: notices sent while away are lost, so it reloads whatever they would have told.
    """
    extra = dict(channels or {})
    backoff = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for channel in (CHANGES_CHANNEL, *extra):
                    await conn.execute(f"LISTEN {channel}")
                feed.up()
                if on_connect is not None:
                    await on_connect()
                if backoff > 0.5:
                    emit(log, logging.INFO, "store.listen_restored", store=where)
                backoff = 0.5
                await _relay_notices(conn, feed, extra)
        except (psycopg.Error, StoreError, OSError, TimeoutError) as exc:
            feed.down()
            emit(log, logging.WARNING, "store.listen_lost", store=where, error=exc, retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        except BaseException:
            feed.down()
            raise


async def _relay_notices(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    feed: ChangeFeed,
    extra: Mapping[str, Callable[[str], None]],
) -> None:
    while True:
        async for note in conn.notifies(timeout=PROBE_EVERY):
            if note.channel == CHANGES_CHANNEL:
                feed.notice()
            else:
                extra[note.channel](note.payload)
        # Quiet for PROBE_EVERY: make sure the connection still answers (a frozen or cut-off server
        # sends nothing, and TCP alone would take far longer to say so).
        await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)
