"""The audit log, and the running relay's record of live tunnels and when hosts were last seen."""

from __future__ import annotations

import time

from .models import AuditRow, User
from .sessions import Sessions

#: The NOTIFY channel of route changes (:mod:`.cluster`; nothing is sent on SQLite).
ROUTES = "relay_routes"


class Records(Sessions):
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
                # "user_id IS ?" would be shorter, but PostgreSQL cannot type a NULL parameter there.
                if user_id is None:
                    db.execute(
                        "UPDATE shares SET uses = uses + 1 WHERE host = ? AND kind = ? AND user_id IS NULL",
                        (host, kind),
                    )
                else:
                    db.execute(
                        "UPDATE shares SET uses = uses + 1 WHERE host = ? AND kind = ? AND user_id = ?",
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
                "DELETE FROM audit WHERE id < (SELECT min(id) FROM (SELECT id FROM audit ORDER BY id DESC "
                "LIMIT ?) AS kept)",
                (max_rows,),
            ).rowcount
        return int(old) + int(extra)

    def count_audit(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM audit").fetchone()[0])

    # -- live tunnels (written by the running relay, read by ``relay tunnels``) -----------------
    # In a cluster each row is also the tunnel's route: ``node`` holds it ("" on a single relay).
    # A node clears, drops and counts only its own rows.

    def clear_live(self, node: str = "") -> None:
        with self._tx() as db:
            db.execute("DELETE FROM live_tunnels WHERE node = ?", (node,))
            db.notify(ROUTES, "")

    def put_live(self, host: str, user_id: int, client: str, since: float, node: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO live_tunnels (host, user_id, client, since, node) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (host) DO UPDATE SET user_id = excluded.user_id, client = excluded.client, "
                "since = excluded.since, node = excluded.node, bytes_in = 0, bytes_out = 0",
                (host, user_id, client, since, node),
            )
            db.notify(ROUTES, host)  # a node that held it before closes its tunnel (a takeover)

    def update_live_bytes(self, rows: list[tuple[str, int, int]], node: str = "") -> None:
        """Byte counts of live tunnels; they are also seen now (so a crash loses at most one period)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE live_tunnels SET bytes_in = ?, bytes_out = ? WHERE host = ? AND node = ?",
                [(b_in, b_out, host, node) for host, b_in, b_out in rows],
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
                    "INSERT INTO last_seen (host, at, client) VALUES (?, ?, ?) ON CONFLICT (host) "
                    "DO UPDATE SET at = excluded.at, client = excluded.client",
                    (host, at, client),
                )

    def last_seen(self, host: str) -> tuple[float, str] | None:
        row = self._db.execute("SELECT at, client FROM last_seen WHERE host = ?", (host,)).fetchone()
        return (float(row[0]), str(row[1])) if row is not None else None

    def drop_live(self, host: str, node: str = "") -> None:
        """Forget ``host``'s row if ``node`` still holds it (not when another node took it over)."""
        with self._tx() as db:
            if db.execute("DELETE FROM live_tunnels WHERE host = ? AND node = ?", (host, node)).rowcount:
                db.notify(ROUTES, host)
