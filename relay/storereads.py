"""Where the running relay reads its store: on the event loop, or off it.

SQLite reads run on the loop, as they always have: a WAL read of a local file never waits on a
writer, and the request path's lookups are answered from the store's caches. A PostgreSQL read is a
network round trip that a slow or unreachable database can stretch to its statement timeout; on the
loop it would stall every visitor and SSH client. So on PostgreSQL, every piece of work that may
read the store (routing a request, an SSH login, a command) runs in a small pool of threads, and
only the requests that need the database wait for it. The engine refuses a query on the loop's
thread outright (:class:`relay.store.postgres.OnLoop`), so a read that slipped through is an error
in the log and a 503, never a stall. Routing, whose reads are mostly answered by the caches, is
tried on the loop first (:meth:`StoreReads.cached_first`) and goes to a thread only when it needs a
query.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from .store import Store
from .store.engine import NeedsStore
from .store.postgres import PostgresEngine

T = TypeVar("T")


class RunReads(Protocol):
    """How a component runs work that may read the store (:meth:`StoreReads.run`)."""

    def __call__(self, work: Callable[[], T], /) -> Awaitable[T]: ...


async def inline(work: Callable[[], T], /) -> T:
    """Work that may read the store, run on the calling thread (SQLite; unit tests)."""
    return work()


#: Threads reading a PostgreSQL store at once (each holds one connection).
READ_THREADS = 8


class StoreReads:
    def __init__(self, store: Store, *, threads: int = READ_THREADS) -> None:
        """``threads=0``: every read on the calling thread (a test's Proxy)."""
        self.store = store
        self._pool: ThreadPoolExecutor | None = None
        if store.clustered and threads > 0:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="store-read")

    @property
    def off_loop(self) -> bool:
        return self._pool is not None

    def guard_loop(self) -> None:
        """From now on no PostgreSQL query may run on the calling thread (the event loop's)."""
        if self._pool is not None:
            self.store.engine.forbid_thread(threading.get_ident())

    async def run(self, work: Callable[[], T], /) -> T:
        """``work()``, on the loop (SQLite) or in a reader thread (PostgreSQL)."""
        if self._pool is None:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def cached_first(self, work: Callable[[], T], /) -> T:
        """``work()`` on the loop if the store's caches answer every read it makes, else (the
        first query it would send) all of it again in a reader thread. Only for work that does
        nothing but read until its last store read (routing: its writes are handed back, its
        counts and audit come after the reads); the thread hop is most of what a cached request
        costs on PostgreSQL."""
        if self._pool is None:
            return work()
        engine = self.store.engine
        assert isinstance(engine, PostgresEngine)
        if engine.forbidden_thread != threading.get_ident():  # not guarded (yet): a miss would block
            return await self.run(work)
        engine.cache_only = True
        try:
            return work()
        except NeedsStore:
            pass
        finally:
            engine.cache_only = False
        return await self.run(work)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
