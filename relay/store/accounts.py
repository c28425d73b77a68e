"""Users, their tokens and their SSH keys."""

from __future__ import annotations

import hmac
import secrets
import time

from ..errors import Conflict, NotFound
from .base import StoreBase
from .engine import Duplicate
from .models import KeyInfo, TokenInfo, User
from .tokens import TOKEN_PREFIX, hash_secret, split_token


class Accounts(StoreBase):
    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, *, admin: bool = False) -> User:
        now = time.time()
        try:
            with self._tx() as db:
                user_id = int(
                    db.execute(
                        "INSERT INTO users (name, is_admin, created_at) VALUES (?, ?, ?) RETURNING id",
                        (name, int(admin), now),
                    ).fetchone()[0]
                )
                # A user's default tunnel name is their user name; claim it with the account so
                # that nobody else can take it first.
                owner = db.execute("SELECT user_id FROM names WHERE name = ?", (name,)).fetchone()
                if owner is not None:
                    raise Conflict(f"name {name!r} is already owned by another user")
                db.execute(
                    "INSERT INTO names (name, user_id, claimed_at) VALUES (?, ?, ?)",
                    (name, user_id, now),
                )
        except Duplicate:
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
                (token_id, owner.id, hash_secret(secret), label, now, expires_at),
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
        key = b"t" + hash_secret(token)
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        seen = self._cache_version
        row = self._db.execute(
            "SELECT t.hash, t.expires_at, u.id, u.name, u.is_admin, u.created_at "
            "FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
            (token_id,),
        ).fetchone()
        if row is None:
            return None
        stored, expires_at, *user = row
        if not hmac.compare_digest(stored, hash_secret(secret)):
            return None
        if expires_at is not None and now >= expires_at:
            return None
        found = User(user[0], user[1], bool(user[2]), user[3], credential=token_id)
        self._remember(key, found, expires_at, seen)
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
                key_id = int(
                    db.execute(
                        "INSERT INTO ssh_keys (user_id, fingerprint, public_key, comment, created_at) "
                        "VALUES (?, ?, ?, ?, ?) RETURNING id",
                        (owner.id, fingerprint, public_key, comment, now),
                    ).fetchone()[0]
                )
        except Duplicate:
            raise Conflict(f"key {fingerprint} is already registered") from None
        return KeyInfo(key_id, user, fingerprint, public_key, comment, now)

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
