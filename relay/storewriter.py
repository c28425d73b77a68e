"""Store writes off the event loop: one thread with its own SQLite connection runs them in order.

A write can wait up to the store's busy timeout (10 s) when another process holds the database
(an admin command, a backup); on the event loop that wait would stall every visitor and every SSH
client. Reads stay on the loop's connection: in WAL mode a writer never blocks them. Writes that a
reply depends on (a new session) are awaited by that request alone; bookkeeping (live tunnels, byte
counts, purges) is queued and never awaited, its failures logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .logfmt import emit
from .store import STORE_ERRORS, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A store write: a function of the writer thread's own Store.
Write = Callable[[Store], T]


class StoreWriter:
    def __init__(self, data_dir: Path, url: str | None = None) -> None:
        """Writes to ``url``'s PostgreSQL store if given, else to the data dir's SQLite file."""
        self._data_dir = data_dir
        self._url = url
        self._local = threading.local()
        # One thread: writes apply in the order they were submitted, one transaction at a time.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store-writer")

    def _store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:  # opened in the writer thread: an SQLite connection stays in its thread
            store = self._local.store = Store.at(self._data_dir, self._url, check=False)
        return store

    async def run(self, write: Write[T]) -> T:
        """Run ``write`` in the writer thread and wait for it (this request only)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: write(self._store()))

    def submit(self, write: Write[object], what: str) -> None:
        """Queue ``write`` without waiting; a failure is logged (``event=store.write_failed``)."""
        future = self._executor.submit(lambda: write(self._store()))
        future.add_done_callback(lambda done: self._report(done, what))

    @staticmethod
    def _report(done: Future[object], what: str) -> None:
        exc = done.exception()
        if exc is None:
            return
        if isinstance(exc, STORE_ERRORS):
            emit(log, logging.WARNING, "store.write_failed", write=what, error=exc)
        else:
            log.error("store write %s failed", what, exc_info=exc)

    def close(self) -> None:
        """Finish what is queued, then close the thread's connection."""

        def close_store() -> None:
            store = getattr(self._local, "store", None)
            if store is not None:
                store.close()

        self._executor.submit(close_store).result()
        self._executor.shutdown(wait=True)
