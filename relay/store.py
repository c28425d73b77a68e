"""The embedded SQLite store: users, token hashes, SSH keys, owned names, sessions, live tunnels.

This is the only module that speaks SQL. Secrets (tokens, session ids) are stored only as SHA-256
hashes: they are 256-bit random values, so a fast hash is enough and a leaked database yields nothing
usable. The schema is versioned; migrations run forward at open time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .datadir import DB_FILE, check_private
from .errors import BadRequest, Conflict, NotFound, StoreError

TOKEN_PREFIX = "rly_"

#: What a store call may raise when the database is busy, full or broken. Callers that must keep
#: serving (the proxy) catch these and answer 503 instead of dropping the connection.
STORE_ERRORS: tuple[type[Exception], ...] = (StoreError, sqlite3.Error)

_MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        hash BLOB NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL,
        last_used_at REAL
    );
    CREATE TABLE ssh_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE TABLE names (
        name TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        claimed_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE live_tunnels (
        host TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        client TEXT NOT NULL,
        since REAL NOT NULL,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0
    );
    """,
    # v2: a session remembers the token it came from, so revoking the token ends the session too.
    """
    ALTER TABLE sessions ADD COLUMN token_id TEXT REFERENCES tokens(id) ON DELETE CASCADE
    """,
    # v3: custom domains. Claims are per (domain, user) until one is verified, so an unverified claim
    # cannot squat a domain; at most one verified claim per domain (the partial unique index).
    """
    CREATE TABLE domains (
        domain TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        challenge TEXT NOT NULL,
        created_at REAL NOT NULL,
        verified_at REAL,
        PRIMARY KEY (domain, user_id)
    );
    CREATE UNIQUE INDEX domains_verified ON domains (domain) WHERE verified_at IS NOT NULL;
    -- What `relay serve` runs with, for admin commands that print it (the CNAME target).
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # v4: sessions found by index, not by scanning: expiry (the purge timer), a user's newest (the
    # per-user cap), and a token's (revocation cascades).
    """
    CREATE INDEX sessions_expiry ON sessions (expires_at);
    CREATE INDEX sessions_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_token ON sessions (token_id)
    """,
    # v5: shares. A share belongs to a host (an owned name's NAME.DOMAIN or a verified custom domain),
    # not to a live tunnel, so it survives reconnects; it goes with the name, the domain or a user.
    """
    CREATE TABLE shares (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL
    );
    CREATE UNIQUE INDEX shares_user ON shares (host, user_id) WHERE kind = 'user';
    CREATE INDEX shares_with ON shares (user_id)
    """,
    # v6: a host made public is one 'public' share row.
    """
    CREATE UNIQUE INDEX shares_public ON shares (host) WHERE kind = 'public'
    """,
    # v7: share links and their guest sessions. A link keeps only its code's hash; a guest session
    # goes with its link (revoked: the row is deleted), and lasts no longer than it.
    """
    ALTER TABLE shares ADD COLUMN label TEXT;
    ALTER TABLE shares ADD COLUMN code_hash BLOB;
    ALTER TABLE shares ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX shares_code ON shares (code_hash) WHERE code_hash IS NOT NULL;
    CREATE TABLE guest_sessions (
        hash BLOB PRIMARY KEY,
        share_id TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX guest_sessions_share ON guest_sessions (share_id, created_at);
    CREATE INDEX guest_sessions_expiry ON guest_sessions (expires_at)
    """,
    # v8: the audit log. No foreign keys: events outlive their users (a removed user's ids are
    # cleared, so a later user given the same id reads none of them).
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        host TEXT NOT NULL DEFAULT '',
        client TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        owner_id INTEGER,
        user_id INTEGER
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_owner ON audit (owner_id, at);
    CREATE INDEX audit_user ON audit (user_id, at)
    """,
    # v9: when each host last had a live tunnel, and from where (the offline page says so; it
    # survives restarts). Deleted with the name or the domain.
    """
    CREATE TABLE last_seen (
        host TEXT PRIMARY KEY,
        at REAL NOT NULL,
        client TEXT NOT NULL
    )
    """,
)


def new_session_id() -> str:
    """A session id (the cookie's value); only its hash is stored."""
    return secrets.token_urlsafe(32)


#: Sessions one user may hold at once (all browsers and tunnel hosts); a new one replaces the oldest.
MAX_SESSIONS_PER_USER = 200


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool
    created_at: float
    #: The credential this user was recognised by: a token id, or "key:ID". Empty when looked up by name.
    credential: str = ""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    label: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class KeyInfo:
    id: int
    user: str
    fingerprint: str
    public_key: str
    comment: str
    created_at: float


@dataclass(frozen=True)
class ShareInfo:
    id: str
    host: str
    owner: str
    kind: str  # "user", "link" or "public"
    user: str | None  # who it is shared with (a user share)
    created_at: float
    expires_at: float | None
    label: str | None = None  # a link's label
    uses: int = 0  # visits so far: sessions of the shared user, guests of a link, public visitors
    owner_id: int = 0


class AuditRow(NamedTuple):
    """One stored audit event (``detail`` is a JSON object)."""

    at: float
    event: str
    actor: str
    host: str
    client: str
    detail: str
    owner_id: int | None
    user_id: int | None


@dataclass(frozen=True)
class Guest:
    """A guest session's link: valid for ``host`` until ``expires_at``."""

    share_id: str
    label: str
    owner_id: int
    host: str
    expires_at: float


@dataclass(frozen=True)
class DomainClaim:
    domain: str
    user: str
    user_id: int
    challenge: str
    created_at: float
    verified_at: float | None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


@dataclass(frozen=True)
class LiveTunnel:
    host: str
    user: str
    client: str
    since: float
    bytes_in: int
    bytes_out: int
    public: bool = False


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """``rly_<10 hex id>_<secret>`` → (public id, secret); None if it is not shaped like a token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    rest = token[len(TOKEN_PREFIX) :]
    token_id, sep, secret = rest.partition("_")
    if not sep or len(token_id) != 10 or not secret:
        return None
    try:
        int(token_id, 16)
    except ValueError:
        return None
    return TOKEN_PREFIX + token_id, secret


#: Most credentials the read cache holds before it starts over (a flood of distinct valid tokens is
#: not a real workload; this only bounds memory).
_CACHE_MAX = 4096


class Store:
    """A connection to ``DATA_DIR/relay.db``. One per process; not shared across threads.

    Credential lookups run on every visitor request, so their positive answers are cached. The cache
    is dropped whenever the database changes: on this connection's own writes, and on any other
    process's commit (``relay token revoke`` ...), which SQLite reports through ``PRAGMA
    data_version``, a counter read without touching a table. A revoked token is therefore refused on
    the very next request, exactly as without the cache.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._cache: dict[bytes, tuple[User, float | None]] = {}
        #: host -> (user ids it is shared with, public?, when the first of those shares expires)
        self._shares: dict[str, tuple[frozenset[int], bool, float | None]] = {}
        self._guests: dict[bytes, Guest] = {}
        self._cache_version = -1
        self._version_read = False  # data_version was read in this pass of the event loop

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
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            try:
                asyncio.get_running_loop().call_soon(self._version_expired)
                self._version_read = True
            except RuntimeError:  # no event loop (the CLI): read it every time
                pass
            if version != self._cache_version:
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

    def _remember(self, key: bytes, user: User, expires_at: float | None) -> None:
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (user, expires_at)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path, *, check: bool = True) -> Store:
        """Open (creating if needed) the store; ``check`` runs SQLite's quick_check first (at start-up;
        a second connection of the same process skips it)."""
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
        store = cls(db, path)
        store._migrate()
        return store

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this relay knows "
                f"({len(_MIGRATIONS)}); upgrade relay"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self._tx():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path} is busy or unwritable: {exc}") from exc
        self._drop_caches()  # this connection's own writes do not move data_version
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # e.g. disk full: nothing was changed
            self._db.execute("ROLLBACK")
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, *, admin: bool = False) -> User:
        now = time.time()
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO users (name, is_admin, created_at) VALUES (?, ?, ?)",
                    (name, int(admin), now),
                )
                assert cur.lastrowid is not None
                user_id = cur.lastrowid
                # A user's default tunnel name is their user name; claim it with the account so
                # that nobody else can take it first.
                owner = db.execute("SELECT user_id FROM names WHERE name = ?", (name,)).fetchone()
                if owner is not None:
                    raise Conflict(f"name {name!r} is already owned by another user")
                db.execute(
                    "INSERT INTO names (name, user_id, claimed_at) VALUES (?, ?, ?)",
                    (name, user_id, now),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None
        return User(user_id, name, admin, now)

    def get_user(self, name: str) -> User:
        row = self._db.execute(
            "SELECT id, name, is_admin, created_at FROM users WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}")
        return User(row[0], row[1], bool(row[2]), row[3])

    def user_by_id(self, user_id: int) -> User | None:
        row = self._db.execute(
            "SELECT id, name, is_admin, created_at FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return User(row[0], row[1], bool(row[2]), row[3]) if row else None

    def list_users(self) -> list[User]:
        rows = self._db.execute("SELECT id, name, is_admin, created_at FROM users ORDER BY name")
        return [User(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def count_users(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    def remove_user(self, name: str) -> None:
        user = self.get_user(name)
        with self._tx() as db:
            db.execute("DELETE FROM users WHERE id = ?", (user.id,))
            db.execute("UPDATE audit SET owner_id = NULL WHERE owner_id = ?", (user.id,))
            db.execute("UPDATE audit SET user_id = NULL WHERE user_id = ?", (user.id,))

    # -- tokens ------------------------------------------------------------------------------

    def create_token(
        self, user: str, *, label: str = "", expires_at: float | None = None
    ) -> tuple[TokenInfo, str]:
        """Create a token; returns its info and the plain token, which is never stored."""
        owner = self.get_user(user)
        token_id = TOKEN_PREFIX + secrets.token_hex(5)
        secret = secrets.token_urlsafe(32)  # 256 bits
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (id, user_id, hash, label, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, owner.id, _hash(secret), label, now, expires_at),
            )
        return TokenInfo(token_id, user, label, now, expires_at, None), f"{token_id}_{secret}"

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        query = (
            "SELECT t.id, u.name, t.label, t.created_at, t.expires_at, t.last_used_at "
            "FROM tokens t JOIN users u ON u.id = t.user_id"
        )
        params: tuple[object, ...] = ()
        if user is not None:
            self.get_user(user)
            query += " WHERE u.name = ?"
            params = (user,)
        rows = self._db.execute(query + " ORDER BY t.created_at", params)
        return [TokenInfo(*r) for r in rows]

    def revoke_token(self, token_id: str) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no token {token_id!r}")

    def verify_token(self, token: str, *, now: float | None = None) -> User | None:
        """The user a plain token belongs to, or None (unknown, wrong, expired). Constant-time compare."""
        parts = split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        now = time.time() if now is None else now
        key = b"t" + _hash(token)
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        row = self._db.execute(
            "SELECT t.hash, t.expires_at, u.id, u.name, u.is_admin, u.created_at "
            "FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
            (token_id,),
        ).fetchone()
        if row is None:
            return None
        stored, expires_at, *user = row
        if not hmac.compare_digest(stored, _hash(secret)):
            return None
        if expires_at is not None and now >= expires_at:
            return None
        found = User(user[0], user[1], bool(user[2]), user[3], credential=token_id)
        self._remember(key, found, expires_at)
        return found

    def credential_alive(self, credential: str, *, now: float | None = None) -> bool:
        """Is the token or key a connection logged in with still valid (not revoked, expired, removed)?"""
        if credential.startswith("key:"):
            row = self._db.execute("SELECT 1 FROM ssh_keys WHERE id = ?", (int(credential[4:]),)).fetchone()
            return row is not None
        row = self._db.execute("SELECT expires_at FROM tokens WHERE id = ?", (credential,)).fetchone()
        now = time.time() if now is None else now
        return row is not None and (row[0] is None or now < row[0])

    # -- SSH keys ----------------------------------------------------------------------------

    def add_key(self, user: str, *, fingerprint: str, public_key: str, comment: str) -> KeyInfo:
        owner = self.get_user(user)
        now = time.time()
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO ssh_keys (user_id, fingerprint, public_key, comment, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (owner.id, fingerprint, public_key, comment, now),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"key {fingerprint} is already registered") from None
        assert cur.lastrowid is not None
        return KeyInfo(cur.lastrowid, user, fingerprint, public_key, comment, now)

    def list_keys(self, user: str | None = None) -> list[KeyInfo]:
        query = (
            "SELECT k.id, u.name, k.fingerprint, k.public_key, k.comment, k.created_at "
            "FROM ssh_keys k JOIN users u ON u.id = k.user_id"
        )
        params: tuple[object, ...] = ()
        if user is not None:
            self.get_user(user)
            query += " WHERE u.name = ?"
            params = (user,)
        return [KeyInfo(*r) for r in self._db.execute(query + " ORDER BY k.id", params)]

    def remove_key(self, key_id: int) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM ssh_keys WHERE id = ?", (key_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no key {key_id}")

    def user_for_key(self, username: str, fingerprint: str) -> User | None:
        row = self._db.execute(
            "SELECT u.id, u.name, u.is_admin, u.created_at, k.id FROM ssh_keys k "
            "JOIN users u ON u.id = k.user_id WHERE k.fingerprint = ? AND u.name = ?",
            (fingerprint, username),
        ).fetchone()
        return User(row[0], row[1], bool(row[2]), row[3], credential=f"key:{row[4]}") if row else None

    # -- names -------------------------------------------------------------------------------

    def name_owner(self, name: str) -> int | None:
        row = self._db.execute("SELECT user_id FROM names WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else None

    def claim_name(self, name: str, user_id: int) -> bool:
        """Record ``user_id`` as owner of ``name`` if unowned. True if the user owns it afterwards."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO names (name, user_id, claimed_at) VALUES (?, ?, ?)",
                (name, user_id, time.time()),
            )
            row = db.execute("SELECT user_id FROM names WHERE name = ?", (name,)).fetchone()
        return bool(row and row[0] == user_id)

    def list_names(self, user: str | None = None) -> list[tuple[str, str]]:
        query = "SELECT n.name, u.name FROM names n JOIN users u ON u.id = n.user_id"
        params: tuple[object, ...] = ()
        if user is not None:
            query += " WHERE u.name = ?"
            params = (user,)
        return [(r[0], r[1]) for r in self._db.execute(query + " ORDER BY n.name", params)]

    def release_name(self, name: str) -> None:
        host = f"{name}.{self.relay_domain()}"
        with self._tx() as db:
            cur = db.execute("DELETE FROM names WHERE name = ?", (name,))
            if cur.rowcount:
                db.execute("DELETE FROM shares WHERE host = ?", (host,))  # they went with the name
                db.execute("DELETE FROM last_seen WHERE host = ?", (host,))
        if cur.rowcount == 0:
            raise NotFound(f"name {name!r} is not owned")

    # -- settings recorded by the running relay ------------------------------------------------

    def record_relay_domain(self, domain: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('domain', ?)", (domain,))

    def record_relay_origin(self, origin: str) -> None:
        """Where the relay's own host answers (``https://relay.example.com``), for share links that
        admin commands print."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('origin', ?)", (origin,))

    def record_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def relay_origin(self) -> str:
        row = self._db.execute("SELECT value FROM settings WHERE key = 'origin'").fetchone()
        return str(row[0]) if row else f"http://{self.relay_domain()}"

    def relay_domain(self) -> str:
        """The domain the relay last ran with (``localhost`` before its first start)."""
        row = self._db.execute("SELECT value FROM settings WHERE key = 'domain'").fetchone()
        return str(row[0]) if row else "localhost"

    # -- custom domains ------------------------------------------------------------------------

    def add_domain(self, domain: str, user: str, challenge: str) -> DomainClaim:
        """Record ``user``'s claim of ``domain`` (the existing claim if they made one already).

        Refused when another user has verified the domain. ``domain`` must already be validated.
        """
        owner = self.get_user(user)
        with self._tx() as db:
            row = db.execute(
                "SELECT u.name FROM domains d JOIN users u ON u.id = d.user_id "
                "WHERE d.domain = ? AND d.verified_at IS NOT NULL AND d.user_id != ?",
                (domain, owner.id),
            ).fetchone()
            if row is not None:
                raise Conflict(f"domain {domain} is already verified by another user")
            db.execute(
                "INSERT OR IGNORE INTO domains (domain, user_id, challenge, created_at) VALUES (?, ?, ?, ?)",
                (domain, owner.id, challenge, time.time()),
            )
        claim = self.domain_claim(domain, user)
        assert claim is not None
        return claim

    def domain_claim(self, domain: str, user: str) -> DomainClaim | None:
        claims = self.list_domains(user, domain)
        return claims[0] if claims else None

    def list_domains(self, user: str | None = None, domain: str | None = None) -> list[DomainClaim]:
        query = (
            "SELECT d.domain, u.name, u.id, d.challenge, d.created_at, d.verified_at "
            "FROM domains d JOIN users u ON u.id = d.user_id WHERE 1"
        )
        params: list[object] = []
        if user is not None:
            self.get_user(user)
            query += " AND u.name = ?"
            params.append(user)
        if domain is not None:
            query += " AND d.domain = ?"
            params.append(domain)
        rows = self._db.execute(query + " ORDER BY d.domain, u.name", params)
        return [DomainClaim(*r) for r in rows]

    def mark_domain_verified(self, domain: str, user_id: int) -> None:
        try:
            with self._tx() as db:
                cur = db.execute(
                    "UPDATE domains SET verified_at = ? WHERE domain = ? AND user_id = ?",
                    (time.time(), domain, user_id),
                )
                if cur.rowcount == 0:
                    raise NotFound(f"no claim of {domain} to verify")
                # The domain is proved to be this user's: other users' pending claims are void.
                db.execute("DELETE FROM domains WHERE domain = ? AND user_id != ?", (domain, user_id))
        except sqlite3.IntegrityError:
            raise Conflict(f"domain {domain} is already verified by another user") from None

    def verified_domain_owner(self, domain: str) -> int | None:
        row = self._db.execute(
            "SELECT user_id FROM domains WHERE domain = ? AND verified_at IS NOT NULL", (domain,)
        ).fetchone()
        return int(row[0]) if row else None

    def remove_domain(self, domain: str, user: str | None = None) -> int:
        """Drop the claims of ``domain`` (only ``user``'s if given); returns how many were removed."""
        query = "DELETE FROM domains WHERE domain = ?"
        params: list[object] = [domain]
        if user is not None:
            query += " AND user_id = ?"
            params.append(self.get_user(user).id)
        with self._tx() as db:
            cur = db.execute(query, params)
            # Shares of the domain go with its owner's claim (another user's pending claim owns none).
            db.execute(
                "DELETE FROM shares WHERE host = ? AND owner_id NOT IN "
                "(SELECT user_id FROM domains WHERE domain = ? AND verified_at IS NOT NULL)",
                (domain, domain),
            )
            db.execute(
                "DELETE FROM last_seen WHERE host = ? AND NOT EXISTS "
                "(SELECT 1 FROM domains WHERE domain = ? AND verified_at IS NOT NULL)",
                (domain, domain),
            )
        if cur.rowcount == 0:
            raise NotFound(f"no claim of domain {domain}" + (f" by {user}" if user else ""))
        return int(cur.rowcount)

    # -- shares ------------------------------------------------------------------------------

    def add_share(
        self, host: str, owner_id: int, user_id: int, *, expires_at: float | None, max_per_host: int = 1000
    ) -> ShareInfo:
        """Share ``host`` with ``user_id``; Conflict if it already is, or past ``max_per_host`` users."""
        share_id = "shr_" + secrets.token_hex(6)
        try:
            with self._tx() as db:
                if self.count_shares(host, "user") >= max_per_host:
                    raise Conflict(
                        f"{host} is already shared with {max_per_host} users (the most); revoke one first"
                    )
                db.execute(
                    "INSERT INTO shares (id, host, owner_id, kind, user_id, created_at, expires_at) "
                    "VALUES (?, ?, ?, 'user', ?, ?, ?)",
                    (share_id, host, owner_id, user_id, time.time(), expires_at),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"{host} is already shared with that user; revoke it first to change it") from None
        return self.get_share(share_id)

    def add_link(
        self, host: str, owner_id: int, code: str, *, label: str, expires_at: float, max_per_host: int
    ) -> ShareInfo:
        """A share link for ``host``; only the hash of ``code`` is kept. Conflict past ``max_per_host``
        live links (expired ones do not count)."""
        share_id = "shr_" + secrets.token_hex(6)
        now = time.time()
        with self._tx() as db:
            live = db.execute(
                "SELECT count(*) FROM shares WHERE host = ? AND kind = 'link' AND expires_at > ?",
                (host, now),
            ).fetchone()[0]
            if live >= max_per_host:
                raise Conflict(
                    f"{host} already has {live} live links (the most is {max_per_host}); revoke one first"
                )
            db.execute(
                "INSERT INTO shares (id, host, owner_id, kind, created_at, expires_at, label, code_hash) "
                "VALUES (?, ?, ?, 'link', ?, ?, ?, ?)",
                (share_id, host, owner_id, now, expires_at, label, _hash(code)),
            )
        return self.get_share(share_id)

    def link_by_code(self, code: str, *, now: float | None = None) -> ShareInfo | None:
        """The live link ``code`` opens, or None (unknown, revoked or expired alike)."""
        if not code or len(code) > 100:
            return None
        row = self._db.execute(
            f"{self._SHARE_SELECT} WHERE s.code_hash = ? AND s.kind = 'link' AND s.expires_at > ?",
            (_hash(code), time.time() if now is None else now),
        ).fetchone()
        return ShareInfo(*row) if row is not None else None

    def count_guest_sessions(self, share_id: str) -> int:
        row = self._db.execute("SELECT count(*) FROM guest_sessions WHERE share_id = ?", (share_id,))
        return int(row.fetchone()[0])

    def insert_guest_session(self, sid: str, share_id: str, host: str, *, max_per_link: int) -> bool:
        """A guest session of link ``share_id`` on ``host``, ending with the link; False (nothing
        written) if the link was revoked or expired meanwhile. Past ``max_per_link`` the oldest goes."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT expires_at FROM shares WHERE id = ? AND kind = 'link' AND host = ? "
                "AND expires_at > ?",
                (share_id, host, now),
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "INSERT INTO guest_sessions (hash, share_id, host, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (_hash(sid), share_id, host, now, row[0]),
            )
            db.execute("UPDATE shares SET uses = uses + 1 WHERE id = ?", (share_id,))
            db.execute(
                "DELETE FROM guest_sessions WHERE hash IN (SELECT hash FROM guest_sessions WHERE "
                "share_id = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (share_id, max_per_link),
            )
        return True

    def guest_session(self, sid: str, host: str) -> Guest | None:
        """The link behind guest session ``sid`` on ``host``, if both are still valid (cached until
        the store changes, so a revoked link ends its sessions at their next request)."""
        if not sid or len(sid) > 100:
            return None
        now = time.time()
        key = b"g" + _hash(f"{host} {sid}")
        if self._fresh():
            hit = self._guests.get(key)
            if hit is not None and now < hit.expires_at:
                return hit
        row = self._db.execute(
            "SELECT s.id, s.label, s.owner_id, s.host, s.expires_at FROM guest_sessions g "
            "JOIN shares s ON s.id = g.share_id WHERE g.hash = ? AND g.host = ? AND s.host = ? "
            "AND s.kind = 'link' AND s.expires_at > ?",
            (_hash(sid), host, host, now),
        ).fetchone()
        if row is None:
            return None
        guest = Guest(str(row[0]), str(row[1] or ""), int(row[2]), str(row[3]), float(row[4]))
        if len(self._guests) >= _CACHE_MAX:
            self._guests.clear()
        self._guests[key] = guest
        return guest

    def delete_guest_session(self, sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM guest_sessions WHERE hash = ?", (_hash(sid),))

    def count_shares(self, host: str, kind: str, *, now: float | None = None) -> int:
        """Live shares of ``kind`` on ``host`` (for the per-host limits)."""
        row = self._db.execute(
            "SELECT count(*) FROM shares WHERE host = ? AND kind = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (host, kind, time.time() if now is None else now),
        )
        return int(row.fetchone()[0])

    _SHARE_SELECT = (
        "SELECT s.id, s.host, o.name, s.kind, u.name, s.created_at, s.expires_at, s.label, s.uses, "
        "s.owner_id "
        "FROM shares s "
        "JOIN users o ON o.id = s.owner_id LEFT JOIN users u ON u.id = s.user_id"
    )

    def get_share(self, share_id: str) -> ShareInfo:
        row = self._db.execute(f"{self._SHARE_SELECT} WHERE s.id = ?", (share_id,)).fetchone()
        if row is None:
            raise NotFound(f"no share {share_id!r}")
        return ShareInfo(*row)

    def get_share_or_none(self, share_id: str) -> ShareInfo | None:
        row = self._db.execute(f"{self._SHARE_SELECT} WHERE s.id = ?", (share_id,)).fetchone()
        return ShareInfo(*row) if row is not None else None

    def list_shares(self, *, owner_id: int | None = None, host: str | None = None) -> list[ShareInfo]:
        query, params = f"{self._SHARE_SELECT} WHERE 1 = 1", list[object]()
        if owner_id is not None:
            query += " AND s.owner_id = ?"
            params.append(owner_id)
        if host is not None:
            query += " AND s.host = ?"
            params.append(host)
        rows = self._db.execute(query + " ORDER BY s.created_at", params).fetchall()
        return [ShareInfo(*row) for row in rows]

    def revoke_share(self, share_id: str, *, owner_id: int | None = None) -> ShareInfo:
        """Delete a share (only one of ``owner_id``'s if given); NotFound otherwise."""
        share = self.get_share(share_id)
        with self._tx() as db:
            query, params = "DELETE FROM shares WHERE id = ?", list[object]([share_id])
            if owner_id is not None:
                query += " AND owner_id = ?"
                params.append(owner_id)
            cur = db.execute(query, params)
        if cur.rowcount == 0:
            raise NotFound(f"no share {share_id!r} of yours")
        return share

    def shared_with(self, host: str, *, now: float | None = None) -> frozenset[int]:
        """The users ``host`` is shared with now."""
        return self.access(host, now=now)[0]

    def is_public(self, host: str, *, now: float | None = None) -> bool:
        return self.access(host, now=now)[1]

    def access(self, host: str, *, now: float | None = None) -> tuple[frozenset[int], bool]:
        """Who besides its owner may visit ``host``: the users it is shared with, and whether it is
        public. Read per request (for visitors who are not the owner), so cached until the store
        changes or the first of these shares expires."""
        now = time.time() if now is None else now
        self._fresh()
        hit = self._shares.get(host)
        if hit is not None and (hit[2] is None or now < hit[2]):
            return hit[0], hit[1]
        rows = self._db.execute(
            "SELECT kind, user_id, expires_at FROM shares WHERE host = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (host, now),
        ).fetchall()
        ends = [r[2] for r in rows if r[2] is not None]
        users = frozenset(int(r[1]) for r in rows if r[0] == "user")
        public = any(r[0] == "public" for r in rows)
        if len(self._shares) >= _CACHE_MAX:
            self._shares.clear()
        self._shares[host] = (users, public, min(ends) if ends else None)
        return users, public

    def set_public(self, host: str, owner_id: int, on: bool) -> bool:
        """Make ``host`` public (or not); returns whether anything changed."""
        with self._tx() as db:
            if on:
                cur = db.execute(
                    "INSERT OR IGNORE INTO shares (id, host, owner_id, kind, created_at) "
                    "VALUES (?, ?, ?, 'public', ?)",
                    ("shr_" + secrets.token_hex(6), host, owner_id, time.time()),
                )
            else:
                cur = db.execute("DELETE FROM shares WHERE host = ? AND kind = 'public'", (host,))
        return bool(cur.rowcount)

    def hosts_shared_with(self, user_id: int, *, now: float | None = None) -> list[tuple[str, str]]:
        """(host, owner name) of every live share with ``user_id``, for their home page."""
        now = time.time() if now is None else now
        rows = self._db.execute(
            "SELECT s.host, o.name FROM shares s JOIN users o ON o.id = s.owner_id WHERE s.user_id = ? "
            "AND s.kind = 'user' AND (s.expires_at IS NULL OR s.expires_at > ?) ORDER BY s.host",
            (user_id, now),
        ).fetchall()
        return [(str(h), str(o)) for h, o in rows]

    # -- sessions ----------------------------------------------------------------------------

    def create_session(
        self, user: User, host: str, ttl: float, *, max_per_user: int = MAX_SESSIONS_PER_USER
    ) -> str:
        """A new browser session bound to ``host``; returns the id that goes into the cookie.

        The session is tied to the token the user signed in with: revoking it ends the session. A
        user at ``max_per_user`` loses the oldest one, so endless sign-ins by one user cost the
        store a bounded number of rows, and each sign-in a constant amount of work (indexed; the
        expired rows go on a timer, :meth:`purge_expired_sessions`).
        """
        sid = new_session_id()
        self.insert_session(sid, user, host, ttl, max_per_user=max_per_user)
        return sid

    def insert_session(
        self, sid: str, user: User, host: str, ttl: float, *, max_per_user: int = MAX_SESSIONS_PER_USER
    ) -> None:
        """The write of :meth:`create_session`, for a ``sid`` made beforehand (new_session_id)."""
        now = time.time()
        token_id = user.credential if user.credential.startswith(TOKEN_PREFIX) else None
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (hash, user_id, host, created_at, expires_at, token_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_hash(sid), user.id, host, now, now + ttl, token_id),
            )
            db.execute(
                "DELETE FROM sessions WHERE hash IN (SELECT hash FROM sessions WHERE user_id = ? "
                "ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (user.id, max_per_user),
            )

    def purge_expired_sessions(self, *, now: float | None = None) -> int:
        """Delete sessions past their expiry (they are already refused); returns how many."""
        with self._tx() as db:
            now = time.time() if now is None else now
            cur = db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            guests = db.execute("DELETE FROM guest_sessions WHERE expires_at < ?", (now,))
        return int(cur.rowcount) + int(guests.rowcount)

    def count_sessions(self, user_id: int | None = None) -> int:
        if user_id is None:
            return int(self._db.execute("SELECT count(*) FROM sessions").fetchone()[0])
        row = self._db.execute("SELECT count(*) FROM sessions WHERE user_id = ?", (user_id,)).fetchone()
        return int(row[0])

    def session_user(self, sid: str, host: str) -> User | None:
        if not sid or len(sid) > 100:
            return None
        now = time.time()
        key = b"s" + _hash(f"{host} {sid}")
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        row = self._db.execute(
            "SELECT u.id, u.name, u.is_admin, u.created_at, s.token_id, s.expires_at FROM sessions s "
            "JOIN users u ON u.id = s.user_id WHERE s.hash = ? AND s.host = ? AND s.expires_at > ?",
            (_hash(sid), host, now),
        ).fetchone()
        if row is None:
            return None
        found = User(row[0], row[1], bool(row[2]), row[3], credential=row[4] or "")
        self._remember(key, found, row[5])
        return found

    @staticmethod
    def session_hash(sid: str) -> str:
        """How a session is named outside the store (the dashboard): its id's hash, never the id."""
        return _hash(sid).hex()

    def session_alive(self, session_hash: str) -> bool:
        """Does the session with this :meth:`session_hash` still exist and not expire?"""
        try:
            key = bytes.fromhex(session_hash)
        except ValueError:
            return False
        row = self._db.execute(
            "SELECT 1 FROM sessions WHERE hash = ? AND expires_at > ?", (key, time.time())
        ).fetchone()
        return row is not None

    def delete_session(self, sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE hash = ?", (_hash(sid),))

    # -- audit ---------------------------------------------------------------------------------

    def add_audit(
        self, rows: list[AuditRow], *, uses: list[tuple[str, str, int | None]] | None = None
    ) -> None:
        """Append events; ``uses``: (host, kind, user id) of shares a visit went through (counted)."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO audit (at, event, actor, host, client, detail, owner_id, user_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for host, kind, user_id in uses or []:
                db.execute(
                    "UPDATE shares SET uses = uses + 1 WHERE host = ? AND kind = ? AND user_id IS ?",
                    (host, kind, user_id),
                )

    def list_audit(
        self,
        *,
        reader_id: int | None = None,
        host: str | None = None,
        user: User | None = None,
        since: float = 0.0,
        limit: int = 100,
    ) -> list[AuditRow]:
        """Newest first. ``reader_id``: only events of that user's hosts and account (None: all);
        ``user``: events by or about that user."""
        query = "SELECT at, event, actor, host, client, detail, owner_id, user_id FROM audit WHERE at >= ?"
        params: list[object] = [since]
        if reader_id is not None:
            query += " AND (owner_id = ? OR user_id = ?)"
            params += [reader_id, reader_id]
        if host is not None:
            query += " AND host = ?"
            params.append(host)
        if user is not None:
            query += " AND (actor = ? OR user_id = ?)"
            params += [user.name, user.id]
        rows = self._db.execute(query + " ORDER BY at DESC, id DESC LIMIT ?", [*params, limit]).fetchall()
        return [AuditRow(*row) for row in rows]

    def purge_audit(self, *, before: float, max_rows: int) -> int:
        """Delete events older than ``before``, then the oldest past ``max_rows``; returns how many."""
        with self._tx() as db:
            old = db.execute("DELETE FROM audit WHERE at < ?", (before,)).rowcount
            extra = db.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id DESC LIMIT -1 OFFSET ?)",
                (max_rows,),
            ).rowcount
        return int(old) + int(extra)

    def count_audit(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM audit").fetchone()[0])

    # -- live tunnels (written by the running relay, read by ``relay tunnels``) -----------------

    def clear_live(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM live_tunnels")

    def put_live(self, host: str, user_id: int, client: str, since: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO live_tunnels (host, user_id, client, since) VALUES (?, ?, ?, ?)",
                (host, user_id, client, since),
            )

    def update_live_bytes(self, rows: list[tuple[str, int, int]]) -> None:
        """Byte counts of live tunnels; they are also seen now (so a crash loses at most one period)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE live_tunnels SET bytes_in = ?, bytes_out = ? WHERE host = ?",
                [(b_in, b_out, host) for host, b_in, b_out in rows],
            )
            db.executemany("UPDATE last_seen SET at = ? WHERE host = ?", [(now, host) for host, _, _ in rows])

    def record_seen(self, host: str, *, client: str | None = None, at: float | None = None) -> None:
        """``host`` was live at ``at`` (now), from ``client`` (unchanged if None: a tunnel closing)."""
        at = time.time() if at is None else at
        with self._tx() as db:
            if client is None:
                db.execute("UPDATE last_seen SET at = ? WHERE host = ?", (at, host))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO last_seen (host, at, client) VALUES (?, ?, ?)", (host, at, client)
                )

    def last_seen(self, host: str) -> tuple[float, str] | None:
        row = self._db.execute("SELECT at, client FROM last_seen WHERE host = ?", (host,)).fetchone()
        return (float(row[0]), str(row[1])) if row is not None else None

    def drop_live(self, host: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM live_tunnels WHERE host = ?", (host,))

    def list_live(self) -> list[LiveTunnel]:
        rows = self._db.execute(
            "SELECT l.host, u.name, l.client, l.since, l.bytes_in, l.bytes_out, "
            "EXISTS (SELECT 1 FROM shares s WHERE s.host = l.host AND s.kind = 'public') "
            "FROM live_tunnels l JOIN users u ON u.id = l.user_id ORDER BY l.host"
        )
        return [LiveTunnel(*r) for r in rows]


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``45m``, ``90s`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    if (
        len(text) < 2
        or text[-1] not in units
        or not re.fullmatch(r"[0-9]{1,9}", text[:-1])
        or int(text[:-1]) == 0
    ):
        raise BadRequest(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 45m")
    return int(text[:-1]) * units[text[-1]]
