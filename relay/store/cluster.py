"""What the nodes of a cluster share beyond the data: keys made once, for every node."""

from __future__ import annotations

import time

from .records import Records


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
