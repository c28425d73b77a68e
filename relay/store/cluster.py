"""What the nodes of a cluster share beyond the data: keys made once, who is alive, who holds what.

Heartbeats and deaths are judged by the database's clock (``engine.now_sql``), never by a node's
own, so nodes whose clocks disagree still agree on who is dead. A route is a ``live_tunnels`` row:
the node that holds the host; changes to routes are told on :data:`ROUTES_CHANNEL` (the payload is
the host) besides the store's general change notice. (``now_sql`` is the engine's own constant, never
input: the f-strings below build no SQL from data.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import Conflict
from .models import LiveTunnel
from .records import ROUTES, Records
from .tokens import hash_secret

#: NOTIFY channel of route changes (payload: the host; "" for many at once).
ROUTES_CHANNEL = ROUTES
#: Seconds a node may stay silent before it is dead and its routes are void (DESIGN §3.9).
DEAD_AFTER = 10.0


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    started_at: float
    heartbeat_at: float
    tunnels: int
    draining: bool
    silent_for: float  # seconds since its last heartbeat, by the database's clock

    @property
    def alive(self) -> bool:
        return self.silent_for < DEAD_AFTER


@dataclass(frozen=True)
class Route:
    node: str
    user_id: int
    since: float  # when its tunnel came up (the later of two claims to one host wins)


class Cluster(Records):
    # -- keys every node must hold the same (the SSH host key, the node-to-node secret) -----------

    def cluster_key(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM cluster_keys WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def cluster_key_once(self, name: str, value: str) -> str:
        """Keep ``value`` as key ``name`` unless a node did first; returns the one kept. Nodes that
        start at once each offer a new key, and all of them end up with the first one written."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO cluster_keys (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (name, value, time.time()),
            )
        kept = self.cluster_key(name)
        assert kept is not None
        return kept

    # -- nodes ---------------------------------------------------------------------------------

    def register_node(self, name: str, address: str, incarnation: str) -> None:
        """Join as ``name``; Conflict if a live node (another process) already has that name."""
        now = self._db.now_sql
        with self._tx() as db:
            row = db.execute(
                f"SELECT address, {now} - heartbeat_at, incarnation FROM nodes WHERE name = ?",
                (name,),
            ).fetchone()
            if row is not None and row[2] != incarnation and float(row[1]) < DEAD_AFTER:
                raise Conflict(
                    f"node {name!r} is already in the cluster (at {row[0]}, heard from {float(row[1]):.0f} s "
                    "ago): give this node another --node name, or stop the other one first"
                )
            db.execute(
                "INSERT INTO nodes (name, address, incarnation, started_at, heartbeat_at, tunnels, draining) "
                f"VALUES (?, ?, ?, {now}, {now}, 0, 0) ON CONFLICT (name) DO UPDATE SET "
                "address = excluded.address, incarnation = excluded.incarnation, started_at = "
                "excluded.started_at, heartbeat_at = excluded.heartbeat_at, tunnels = 0, draining = 0",
                (name, address, incarnation),
            )

    def heartbeat(self, name: str, incarnation: str, tunnels: int, *, draining: bool = False) -> float | None:
        """Say this node lives; returns the seconds since its previous heartbeat (by the database's
        clock), or None if the row is gone or another process took the name."""
        now = self._db.now_sql
        with self._tx() as db:
            row = db.execute(
                f"SELECT {now} - heartbeat_at FROM nodes WHERE name = ? AND incarnation = ?",
                (name, incarnation),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                f"UPDATE nodes SET heartbeat_at = {now}, tunnels = ?, draining = ? WHERE name = ? "
                "AND incarnation = ?",
                (tunnels, int(draining), name, incarnation),
            )
        return float(row[0])

    def leave(self, name: str, incarnation: str) -> None:
        """This node stops: its row and its routes go (its clients reconnect to the others)."""
        with self._tx() as db:
            db.execute("DELETE FROM nodes WHERE name = ? AND incarnation = ?", (name, incarnation))
            db.execute("DELETE FROM live_tunnels WHERE node = ?", (name,))
            db.notify(ROUTES_CHANNEL, "")

    def nodes(self) -> list[NodeInfo]:
        rows = self._db.execute(
            "SELECT name, address, started_at, heartbeat_at, tunnels, draining, "
            f"{self._db.now_sql} - heartbeat_at FROM nodes ORDER BY name"
        ).fetchall()
        return [
            NodeInfo(r[0], r[1], float(r[2]), float(r[3]), int(r[4]), bool(r[5]), float(r[6])) for r in rows
        ]

    # -- routes: which node holds each live host -------------------------------------------------

    def routes(self) -> dict[str, Route]:
        """Every route of the cluster (live nodes' and dead ones' alike; the caller judges)."""
        rows = self._db.execute(
            "SELECT host, node, user_id, since FROM live_tunnels WHERE node != ''"
        ).fetchall()
        return {str(r[0]): Route(str(r[1]), int(r[2]), float(r[3])) for r in rows}

    def list_live(self) -> list[LiveTunnel]:
        """The live tunnels: a single relay's, or those of the cluster's live nodes (a dead node's
        rows stay until it starts again, but its tunnels are gone)."""
        rows = self._db.execute(
            "SELECT l.host, u.name, l.client, l.since, l.bytes_in, l.bytes_out, "
            "EXISTS (SELECT 1 FROM shares s WHERE s.host = l.host AND s.kind = 'public'), l.node "
            "FROM live_tunnels l JOIN users u ON u.id = l.user_id LEFT JOIN nodes n ON n.name = l.node "
            f"WHERE l.node = '' OR {self._db.now_sql} - n.heartbeat_at < ? ORDER BY l.host",
            (DEAD_AFTER,),
        )
        return [LiveTunnel(r[0], r[1], r[2], r[3], r[4], r[5], public=bool(r[6]), node=r[7]) for r in rows]

    def live_elsewhere(self, host: str, node: str) -> LiveTunnel | None:
        """``host``'s tunnel if a live node other than ``node`` holds it (the dashboard of a node
        shows the cluster's tunnels, with the figures their node last wrote)."""
        row = self._db.execute(
            "SELECT l.host, u.name, l.client, l.since, l.bytes_in, l.bytes_out, l.node FROM live_tunnels l "
            "JOIN users u ON u.id = l.user_id JOIN nodes n ON n.name = l.node "
            f"WHERE l.host = ? AND l.node != ? AND {self._db.now_sql} - n.heartbeat_at < ?",
            (host, node, DEAD_AFTER),
        ).fetchone()
        if row is None:
            return None
        return LiveTunnel(row[0], row[1], row[2], float(row[3]), int(row[4]), int(row[5]), node=row[6])

    def route(self, host: str) -> Route | None:
        row = self._db.execute(
            "SELECT node, user_id, since FROM live_tunnels WHERE host = ? AND node != ''", (host,)
        ).fetchone()
        return Route(str(row[0]), int(row[1]), float(row[2])) if row else None

    # -- sign-in hand-off codes, shared so that any node redeems a code any node minted ------------

    def issue_sso(
        self, code: str, *, user_id: int, credential: str, host: str, state: str, guest: str, ttl: float,
        max_per_user: int,
    ) -> bool:  # fmt: skip
        """Keep ``code`` (hashed) for ``host``; False if ``user_id`` already has ``max_per_user`` open."""
        now = time.time()
        with self._tx() as db:
            open_codes = db.execute(
                "SELECT count(*) FROM sso_codes WHERE user_id = ? AND expires_at > ?", (user_id, now)
            ).fetchone()[0]
            if int(open_codes) >= max_per_user:
                return False
            db.execute(
                "INSERT INTO sso_codes (hash, user_id, credential, host, state_hash, guest, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (hash_secret(code), user_id, credential, host, hash_secret(state), guest, now + ttl),
            )
        return True

    def redeem_sso(self, code: str) -> tuple[int, str, str, bytes, str, float] | None:
        """Spend ``code`` (whichever node asks first gets it): (user id, credential, host, state
        hash, guest, expiry), or None if it is unknown or spent."""
        with self._tx() as db:
            row = db.execute(
                "DELETE FROM sso_codes WHERE hash = ? RETURNING user_id, credential, host, state_hash, "
                "guest, expires_at",
                (hash_secret(code),),
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), str(row[1]), str(row[2]), bytes(row[3]), str(row[4]), float(row[5])

    def purge_sso(self, *, now: float | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM sso_codes WHERE expires_at < ?", (time.time() if now is None else now,)
            )
        return int(cur.rowcount)
