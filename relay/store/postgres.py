"""The cluster engine: one PostgreSQL database that every node of a cluster shares (psycopg 3).

A statement runs in autocommit unless it is inside :meth:`PostgresEngine.transaction`. Every write
transaction also moves ``relay_changes.n``, the counter :meth:`data_version` reads, so a node's
credential cache knows when another node changed something (SQLite gives the same for free).

Schema changes run at start-up inside one transaction holding an advisory lock, so nodes started at
once migrate one after another and the later ones find the work done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import conninfo, errors

from ..errors import StoreError
from .changes import CHANGES_CHANNEL, ChangeFeed
from .engine import Cursor, Duplicate, NeedsStore
from .schema import POSTGRES_BASE, POSTGRES_BASE_VERSION, POSTGRES_MIGRATIONS, SCHEMA_VERSION

#: pg_advisory_xact_lock key for schema changes ("relay" in ASCII).
_MIGRATION_LOCK = 0x72656C6179
#: How connections are made: a server that does not answer is given up on in 10 s, a dead peer is
#: noticed by TCP keepalives within ~15 s, and no statement runs longer than 10 s (a slow database
#: slows the requests that need it, never holds a thread for ever).
CONNECT_OPTIONS: dict[str, str | int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 5,
    "options": "-c statement_timeout=10000",
}


#: After a connection could not be made, the next try waits this long (seconds), doubling up to
#: RETRY_MAX; meanwhile statements that need a new connection fail at once.
RETRY_FIRST = 0.25
RETRY_MAX = 2.0


class ConnectBackoff:
    """Who may try to connect now. While the database answers, every thread connects as it needs.
    After a failed try, one thread at a time tries again, no sooner than a delay that doubles, and
    the others fail at once with the last error: an unreachable (or silent) database costs one
    waiting connect at a time, not one per request, and cached credentials answer without waiting."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._trying = False
        self._error = ""

    def refusal(self) -> str | None:
        """None if the calling thread may try now (it must then report :meth:`succeeded` or
        :meth:`failed`); otherwise why not."""
        with self._lock:
            if self._failures == 0:
                return None
            wait = self._retry_at - self._clock()
            if self._trying or wait > 0:
                return f"{self._error} (trying again in {max(wait, 0.0):.1f} s)"
            self._trying = True
            return None

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._trying = 0, False

    def failed(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            self._trying, self._error = False, error
            self._retry_at = self._clock() + min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))


def connect_string(url: str) -> str:
    """``url`` with :data:`CONNECT_OPTIONS` added (a URL's own settings win)."""
    given = conninfo.conninfo_to_dict(url)
    return conninfo.make_conninfo(url, **{k: v for k, v in CONNECT_OPTIONS.items() if k not in given})


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


class OnLoop(StoreError):
    """A PostgreSQL query was attempted on the event loop thread (a bug: it would stall everyone)."""


class PostgresEngine:
    """Connections to one database, one per thread that uses it (psycopg connections are not
    shared between threads); a thread's broken connection is made again at its next statement."""

    kind = "postgresql"
    now_sql = "extract(epoch FROM clock_timestamp())::double precision"

    def __init__(self, url: str) -> None:
        self.url = url  # with its password: never logged (``where`` is)
        self.where = redact(url)
        self._sql: dict[str, str] = {}
        self._local = threading.local()
        self._all: list[psycopg.Connection[tuple[object, ...]]] = []
        self._lock = threading.Lock()
        self._backoff = ConnectBackoff()
        #: The event loop's thread, once the relay serves: no statement may run there.
        self.forbidden_thread: int | None = None
        #: Set by the loop while it tries to answer from the caches: a statement there raises
        #: NeedsStore (the work moves to a thread), not OnLoop (a bug).
        self.cache_only = False
        #: Set by a running relay: other connections' commits, as LISTEN/NOTIFY reports them.
        self.feed: ChangeFeed | None = None
        self._live()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if (refusal := self._backoff.refusal()) is not None:
            raise StoreError(f"cannot connect to {self.where}: {refusal}")
        try:
            conn = psycopg.connect(connect_string(self.url), autocommit=True)
        except psycopg.Error as exc:
            self._backoff.failed(_first_line(exc))
            raise StoreError(f"cannot connect to {self.where}: {_first_line(exc)}") from exc
        except BaseException:
            self._backoff.failed("the connection was not made")
            raise
        self._backoff.succeeded()
        with self._lock:
            self._all = [c for c in self._all if not c.closed] + [conn]
        return conn

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
            conn = self._live()
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where} has schema version {version}, newer than this relay knows "
                    f"({SCHEMA_VERSION}); upgrade relay on this node"
                )
            if version == 0:
                conn.execute(POSTGRES_BASE.encode())
                conn.execute("CREATE TABLE relay_schema (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO relay_schema VALUES (%s)", (POSTGRES_BASE_VERSION,))
                conn.execute("CREATE TABLE relay_changes (n BIGINT NOT NULL)")
                conn.execute("INSERT INTO relay_changes VALUES (0)")
                version = POSTGRES_BASE_VERSION
            for number, script in POSTGRES_MIGRATIONS:
                if number > version:
                    conn.execute(script.encode())
                    conn.execute("UPDATE relay_schema SET version = %s", (number,))

    def schema_version(self) -> int:
        """The database's schema version; 0 for a database the relay has not set up."""
        conn = self._live()
        exists = conn.execute("SELECT to_regclass('relay_schema') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT version FROM relay_schema").fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def _statement(self, sql: str) -> str:
        # The store writes "?"; psycopg wants "%s" (and a literal "%" doubled).
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return text

    def _live(self) -> psycopg.Connection[tuple[object, ...]]:
        if self.forbidden_thread is not None and threading.get_ident() == self.forbidden_thread:
            if self.cache_only:
                raise NeedsStore
            raise OnLoop(f"a query of {self.where} was about to run on the event loop")
        conn: psycopg.Connection[tuple[object, ...]] | None = getattr(self._local, "conn", None)
        if conn is None or conn.broken or conn.closed:
            conn = self._local.conn = self._connect()
        return conn

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
        conn = self._live()
        try:
            with conn.transaction():
                yield
                if count:  # other nodes drop their caches when this commits (delivered at commit)
                    conn.execute("UPDATE relay_changes SET n = n + 1")
                    conn.execute(f"NOTIFY {CHANGES_CHANNEL}")
        except psycopg.Error as exc:
            raise StoreError(f"cannot write {self.where}: {_first_line(exc)}") from exc

    def data_version(self) -> int:
        if self.feed is not None:
            return self.feed.version(self._read_version)
        return self._read_version()

    def _read_version(self) -> int:
        row = self.execute("SELECT n FROM relay_changes").fetchone()
        return int(row[0])

    def notify(self, channel: str, payload: str) -> None:
        self.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def forbid_thread(self, ident: int) -> None:
        self.forbidden_thread = ident

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
