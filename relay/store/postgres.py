"""The cluster engine: one PostgreSQL database that every node of a cluster shares (psycopg 3).

A statement runs in autocommit unless it is inside :meth:`PostgresEngine.transaction`. Every write
transaction also moves ``relay_changes.n``, the counter :meth:`data_version` reads, so a node's
credential cache knows when another node changed something (SQLite gives the same for free).

Schema changes run at start-up inside one transaction holding an advisory lock, so nodes started at
once migrate one after another and the later ones find the work done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import conninfo, errors

from ..errors import StoreError
from .engine import Cursor, Duplicate
from .schema import POSTGRES_BASE, POSTGRES_BASE_VERSION, POSTGRES_MIGRATIONS, SCHEMA_VERSION

#: pg_advisory_xact_lock key for schema changes ("relay" in ASCII).
_MIGRATION_LOCK = 0x72656C6179
#: Seconds to wait for the server when connecting, before saying it cannot be reached.
CONNECT_TIMEOUT = 10


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


class PostgresEngine:
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url  # with its password: never logged (``where`` is)
        self.where = redact(url)
        self._sql: dict[str, str] = {}
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {_first_line(exc)}") from exc

    @classmethod
    def open(cls, url: str) -> PostgresEngine:
        """Connect and bring the schema up to date (refusing a newer one, writing nothing then)."""
        if not is_postgres_url(url):
            raise StoreError(f"--store must be a postgresql:// URL, not {url.split(':', 1)[0]!r}")
        engine = cls(url)
        try:
            engine._migrate()
        except BaseException:
            engine.close()
            raise
        return engine

    def _migrate(self) -> None:
        with self.transaction(count=False):
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where} has schema version {version}, newer than this relay knows "
                    f"({SCHEMA_VERSION}); upgrade relay on this node"
                )
            if version == 0:
                self._conn.execute(POSTGRES_BASE.encode())
                self._conn.execute("CREATE TABLE relay_schema (version INTEGER NOT NULL)")
                self._conn.execute("INSERT INTO relay_schema VALUES (%s)", (POSTGRES_BASE_VERSION,))
                self._conn.execute("CREATE TABLE relay_changes (n BIGINT NOT NULL)")
                self._conn.execute("INSERT INTO relay_changes VALUES (0)")
                version = POSTGRES_BASE_VERSION
            for number, script in POSTGRES_MIGRATIONS:
                if number > version:
                    self._conn.execute(script.encode())
                    self._conn.execute("UPDATE relay_schema SET version = %s", (number,))

    def schema_version(self) -> int:
        """The database's schema version; 0 for a database the relay has not set up."""
        exists = self._conn.execute("SELECT to_regclass('relay_schema') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = self._conn.execute("SELECT version FROM relay_schema").fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def _statement(self, sql: str) -> str:
        # The store writes "?"; psycopg wants "%s" (and a literal "%" doubled).
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return text

    def _live(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn.broken or self._conn.closed:
            self._conn = self._connect()  # a lost connection is made again at the next use
        return self._conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        try:
            return self._live().execute(self._statement(sql), params)
        except errors.IntegrityError as exc:
            raise Duplicate(_first_line(exc)) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {_first_line(exc)}") from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        try:
            with self._live().cursor() as cur:
                cur.executemany(self._statement(sql), rows)
        except errors.IntegrityError as exc:
            raise Duplicate(_first_line(exc)) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {_first_line(exc)}") from exc

    @contextmanager
    def transaction(self, *, count: bool = True) -> Iterator[None]:
        try:
            with self._live().transaction():
                yield
                if count:
                    self._conn.execute("UPDATE relay_changes SET n = n + 1")
        except psycopg.Error as exc:
            raise StoreError(f"cannot write {self.where}: {_first_line(exc)}") from exc

    def data_version(self) -> int:
        row = self.execute("SELECT n FROM relay_changes").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._conn.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
