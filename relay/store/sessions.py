"""Browser sessions: created at sign-in, bound to one host, capped per user."""

from __future__ import annotations

import time

from .models import MAX_SESSIONS_PER_USER, User
from .shares import Shares
from .tokens import TOKEN_PREFIX, hash_secret, new_session_id


class Sessions(Shares):
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
                (hash_secret(sid), user.id, host, now, now + ttl, token_id),
            )
            db.execute(
                "DELETE FROM sessions WHERE user_id = ? AND hash NOT IN (SELECT hash FROM sessions "
                "WHERE user_id = ? ORDER BY created_at DESC LIMIT ?)",
                (user.id, user.id, max_per_user),
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
        key = b"s" + hash_secret(f"{host} {sid}")
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        seen = self._cache_version
        row = self._db.execute(
            "SELECT u.id, u.name, u.is_admin, u.created_at, s.token_id, s.expires_at FROM sessions s "
            "JOIN users u ON u.id = s.user_id WHERE s.hash = ? AND s.host = ? AND s.expires_at > ?",
            (hash_secret(sid), host, now),
        ).fetchone()
        if row is None:
            return None
        found = User(row[0], row[1], bool(row[2]), row[3], credential=row[4] or "")
        self._remember(key, found, row[5], seen)
        return found

    @staticmethod
    def session_hash(sid: str) -> str:
        """How a session is named outside the store (the dashboard): its id's hash, never the id."""
        return hash_secret(sid).hex()

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
            db.execute("DELETE FROM sessions WHERE hash = ?", (hash_secret(sid),))
