"""The embedded engine: one SQLite file in the data dir (WAL, 0600, checked at start-up)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..datadir import DB_FILE, check_private
from ..errors import StoreError
from .engine import Cursor, Duplicate
from .schema import SQLITE_MIGRATIONS


class SqliteEngine:
    kind = "sqlite"
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.where = str(path)

    @classmethod
    def open(cls, data_dir: Path, *, check: bool = True) -> SqliteEngine:
        """Open (creating if needed) ``DATA_DIR/relay.db`` and bring its schema up to date; ``check``
        runs SQLite's quick_check first (at start-up; a second connection of a process skips it)."""
        path = data_dir / DB_FILE
        check_private(path)
        existed = path.exists()
        if not existed:
            # Create it 0600 before SQLite touches it, so no window exists where it is readable.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA foreign_keys = ON")
            if existed and check:
                row = db.execute("PRAGMA quick_check").fetchone()
                if row is None or row[0] != "ok":
                    raise StoreError(
                        f"{path} failed its integrity check ({row[0] if row else 'no result'}); "
                        "restore it from a backup — the relay will not overwrite it"
                    )
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {path}: {exc}; restore it from a backup") from exc
        engine = cls(db, path)
        engine._migrate()
        return engine

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(SQLITE_MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this relay knows "
                f"({len(SQLITE_MIGRATIONS)}); upgrade relay"
            )
        for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise Duplicate(str(exc)) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise Duplicate(str(exc)) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock up front: no upgrade deadlock
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path} is busy or unwritable: {exc}") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # e.g. disk full: nothing was changed
            self._db.execute("ROLLBACK")
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    def data_version(self) -> int:
        # SQLite's own counter of other connections' commits: read without touching a table.
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def notify(self, channel: str, payload: str) -> None:
        """A single relay has no other node to tell."""

    def forbid_thread(self, ident: int) -> None:
        """Nothing to refuse: a local WAL read is as quick as a cache (and the loop's own)."""

    def close(self) -> None:
        self._db.close()
