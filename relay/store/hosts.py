"""Owned names, custom-domain claims, and the settings the running relay records."""

from __future__ import annotations

import time

from ..errors import Conflict, NotFound
from .accounts import Accounts
from .engine import Duplicate
from .models import DomainClaim

_PUT_SETTING = (
    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class Hosts(Accounts):
    # -- names -------------------------------------------------------------------------------

    def name_owner(self, name: str) -> int | None:
        row = self._db.execute("SELECT user_id FROM names WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else None

    def claim_name(self, name: str, user_id: int) -> bool:
        """Record ``user_id`` as owner of ``name`` if unowned. True if the user owns it afterwards."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO names (name, user_id, claimed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
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
            db.execute(_PUT_SETTING, ("domain", domain))

    def record_relay_origin(self, origin: str) -> None:
        """Where the relay's own host answers (``https://relay.example.com``), for share links that
        admin commands print."""
        with self._tx() as db:
            db.execute(_PUT_SETTING, ("origin", origin))

    def record_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(_PUT_SETTING, (key, value))

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
                "INSERT INTO domains (domain, user_id, challenge, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
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
            "FROM domains d JOIN users u ON u.id = d.user_id WHERE 1 = 1"
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
        except Duplicate:
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
