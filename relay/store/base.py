"""The store's core: the engine it runs on, its read caches, and its write transaction.

Credential lookups run on every visitor request, so their positive answers are cached. The caches
are dropped whenever the database changes: on this connection's own writes, and on any other
connection's commit (``relay token revoke``, another node), which the engine reports as a new
:meth:`~relay.store.engine.Engine.data_version`. A revoked token is therefore refused on the very
next request, exactly as without the cache.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .engine import Engine
from .models import Guest, User

#: Most credentials the read cache holds before it starts over (a flood of distinct valid tokens is
#: not a real workload; this only bounds memory).
CACHE_MAX = 4096

K = TypeVar("K")
V = TypeVar("V")


class StoreBase:
    """One connection to the store's database. One per thread; not shared across threads."""

    def __init__(self, engine: Engine) -> None:
        self._db = engine
        self.where = engine.where
        self._cache: dict[bytes, tuple[User, float | None]] = {}
        #: host -> (user ids it is shared with, public?, when the first of those shares expires)
        self._shares: dict[str, tuple[frozenset[int], bool, float | None]] = {}
        self._guests: dict[bytes, Guest] = {}
        self._cache_version = -1
        self._version_read = False  # data_version was read in this pass of the event loop
        self._cache_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self._db

    @property
    def clustered(self) -> bool:
        """On PostgreSQL: the store of a cluster's nodes (which share keys through it)."""
        return self._db.kind == "postgresql"

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None on PostgreSQL."""
        path = getattr(self._db, "path", None)
        return path if isinstance(path, Path) else None

    def close(self) -> None:
        self._db.close()

    def _cached(self, key: bytes, now: float) -> User | None:
        if not self._fresh():
            return None
        hit = self._cache.get(key)
        if hit is None:
            return None
        user, expires_at = hit
        if expires_at is not None and now >= expires_at:
            del self._cache[key]
            return None
        return user

    def _fresh(self) -> bool:
        """Drop the caches if the database changed since they were filled; False if it did."""
        if not self._version_read:
            # Read once per pass of the event loop, not per request: the requests of one pass are
            # served at the same moment, and the next pass sees any commit made meanwhile.
            version = self._db.data_version()
            try:
                asyncio.get_running_loop().call_soon(self._version_expired)
                self._version_read = True
            except RuntimeError:  # no event loop (the CLI): read it every time
                pass
            if version != self._cache_version:
                with self._cache_lock:
                    self._drop_caches()
                    self._cache_version = version
                return False
        return True

    def _drop_caches(self) -> None:
        self._cache.clear()
        self._shares.clear()
        self._guests.clear()

    def _version_expired(self) -> None:
        self._version_read = False

    def _remember(self, key: bytes, user: User, expires_at: float | None, seen: int) -> None:
        self._keep(self._cache, key, (user, expires_at), seen)

    def _keep(self, cache: dict[K, V], key: K, value: V, seen: int) -> None:
        """Cache ``value``, read while the caches were at version ``seen``, unless they moved on
        since: on PostgreSQL, reader threads share these caches, and another thread may have
        dropped them (a change was noticed) while this one's answer was on its way."""
        with self._cache_lock:
            if self._cache_version != seen:
                return
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[key] = value

    @contextmanager
    def _tx(self) -> Iterator[Engine]:
        with self._db.transaction():
            with self._cache_lock:  # this connection's own writes do not move SQLite's data_version
                self._drop_caches()
                self._cache_version = -1  # and what another thread is reading now is not kept
            yield self._db
