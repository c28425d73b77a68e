"""Engine-neutral ways for store tests to look behind the store's interface."""

from __future__ import annotations

from relay.store import Store
from relay.store.postgres import PostgresEngine
from relay.store.schema import TABLES
from relay.store.sqlite import SqliteEngine


def twin(store: Store) -> Store:
    """A second connection to the same database (another process, another node)."""
    engine = store.engine
    if isinstance(engine, SqliteEngine):
        return Store.open(engine.path.parent, check=False)
    assert isinstance(engine, PostgresEngine)
    return Store.connect(engine.url)


def stored_bytes(store: Store) -> bytes:
    """Everything the database holds: SQLite's files, or every row of every table as text."""
    engine = store.engine
    if isinstance(engine, SqliteEngine):
        files = sorted(engine.path.parent.glob(engine.path.name + "*"))
        return b"".join(path.read_bytes() for path in files)
    parts = []
    for table in TABLES:
        for row in engine.execute(f"SELECT * FROM {table}"):
            parts.append(repr(row).encode())
            parts += [bytes(v) for v in row if isinstance(v, bytes | memoryview)]
    return b"\n".join(parts)
