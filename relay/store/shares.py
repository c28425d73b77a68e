"""Shares with users, share links and their guest sessions, public hosts."""

from __future__ import annotations

import secrets
import time

from ..errors import Conflict, NotFound
from .engine import Duplicate
from .hosts import Hosts
from .models import Guest, ShareInfo
from .tokens import hash_secret


class Shares(Hosts):
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
        except Duplicate:
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
                (share_id, host, owner_id, now, expires_at, label, hash_secret(code)),
            )
        return self.get_share(share_id)

    def link_by_code(self, code: str, *, now: float | None = None) -> ShareInfo | None:
        """The live link ``code`` opens, or None (unknown, revoked or expired alike)."""
        if not code or len(code) > 100:
            return None
        row = self._db.execute(
            f"{self._SHARE_SELECT} WHERE s.code_hash = ? AND s.kind = 'link' AND s.expires_at > ?",
            (hash_secret(code), time.time() if now is None else now),
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
                (hash_secret(sid), share_id, host, now, row[0]),
            )
            db.execute("UPDATE shares SET uses = uses + 1 WHERE id = ?", (share_id,))
            db.execute(
                "DELETE FROM guest_sessions WHERE share_id = ? AND hash NOT IN (SELECT hash FROM "
                "guest_sessions WHERE share_id = ? ORDER BY created_at DESC LIMIT ?)",
                (share_id, share_id, max_per_link),
            )
        return True

    def guest_session(self, sid: str, host: str) -> Guest | None:
        """The link behind guest session ``sid`` on ``host``, if both are still valid (cached until
        the store changes, so a revoked link ends its sessions at their next request)."""
        if not sid or len(sid) > 100:
            return None
        now = time.time()
        key = b"g" + hash_secret(f"{host} {sid}")
        if self._fresh():
            hit = self._guests.get(key)
            if hit is not None and now < hit.expires_at:
                return hit
        seen = self._cache_version
        row = self._db.execute(
            "SELECT s.id, s.label, s.owner_id, s.host, s.expires_at FROM guest_sessions g "
            "JOIN shares s ON s.id = g.share_id WHERE g.hash = ? AND g.host = ? AND s.host = ? "
            "AND s.kind = 'link' AND s.expires_at > ?",
            (hash_secret(sid), host, host, now),
        ).fetchone()
        if row is None:
            return None
        guest = Guest(str(row[0]), str(row[1] or ""), int(row[2]), str(row[3]), float(row[4]))
        self._keep(self._guests, key, guest, seen)
        return guest

    def delete_guest_session(self, sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM guest_sessions WHERE hash = ?", (hash_secret(sid),))

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
        seen = self._cache_version
        rows = self._db.execute(
            "SELECT kind, user_id, expires_at FROM shares WHERE host = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (host, now),
        ).fetchall()
        ends = [r[2] for r in rows if r[2] is not None]
        users = frozenset(int(r[1]) for r in rows if r[0] == "user")
        public = any(r[0] == "public" for r in rows)
        self._keep(self._shares, host, (users, public, min(ends) if ends else None), seen)
        return users, public

    def set_public(self, host: str, owner_id: int, on: bool) -> bool:
        """Make ``host`` public (or not); returns whether anything changed."""
        with self._tx() as db:
            if on:
                cur = db.execute(
                    "INSERT INTO shares (id, host, owner_id, kind, created_at) "
                    "VALUES (?, ?, ?, 'public', ?) ON CONFLICT DO NOTHING",
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
