"""The store: every table's reads and writes, on either engine."""

from __future__ import annotations

from pathlib import Path

from .cluster import Cluster
from .sqlite import SqliteEngine


class Store(Cluster):
    """Users, credentials, names, domains, shares, sessions, audit and live tunnels.

    Built up in layers, one module per subject (accounts → hosts → shares → sessions → records →
    cluster); each layer may use the ones below it. The SQL is the same on both engines (:mod:`.engine`).
    """

    @classmethod
    def open(cls, data_dir: Path, *, check: bool = True) -> Store:
        """The embedded store, ``DATA_DIR/relay.db`` (created if needed)."""
        return cls(SqliteEngine.open(data_dir, check=check))

    @classmethod
    def connect(cls, url: str) -> Store:
        """The PostgreSQL store at ``url`` (its schema created or brought forward)."""
        from .postgres import PostgresEngine  # psycopg loads only for a cluster

        return cls(PostgresEngine.open(url))

    @classmethod
    def at(cls, data_dir: Path, url: str | None, *, check: bool = True) -> Store:
        """PostgreSQL when ``url`` is given (``--store``), else the data dir's SQLite file."""
        return cls.connect(url) if url else cls.open(data_dir, check=check)
