"""What the store asks of a database engine: run a statement, run a transaction, tell a change.

The store's SQL is written once, with ``?`` placeholders, in the part of SQL that SQLite and
PostgreSQL read alike (``ON CONFLICT``, ``RETURNING``, no engine's own functions). An engine turns
that into its driver's calls, and turns its driver's "unique constraint" error into
:class:`Duplicate`, so no code above this seam names a driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Duplicate(Exception):
    """A write broke a unique or foreign-key constraint (the driver's IntegrityError)."""


class NeedsStore(Exception):
    """Raised in place of a query while the event loop tries to answer from the store's caches
    (:meth:`relay.storereads.StoreReads.cached_first`): the work is done again in a reader thread.
    Not a StoreError, so that nothing takes it for the database being away."""


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses (both drivers' cursors have it)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Engine(Protocol):
    #: Where the data lives, for messages: the SQLite file, or the PostgreSQL URL without password.
    where: str
    #: "sqlite" or "postgresql".
    kind: str
    #: SQL for the database server's clock in Unix seconds: nodes judge each other's heartbeats by
    #: one clock, the database's, whatever their own clocks say.
    now_sql: str

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed on exit, rolled back on an exception."""
        ...

    def data_version(self) -> int:
        """A number that moves whenever another connection commits a change (cache freshness)."""
        ...

    def notify(self, channel: str, payload: str) -> None:
        """Tell the other nodes (PostgreSQL NOTIFY, delivered when the transaction commits)."""
        ...

    def forbid_thread(self, ident: int) -> None:
        """Refuse statements on thread ``ident`` from now on (PostgreSQL: the event loop's)."""
        ...

    def close(self) -> None: ...
