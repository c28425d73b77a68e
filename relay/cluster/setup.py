"""A node's checks before it joins: a free name, and the cluster's secret (made by the first node)."""

from __future__ import annotations

import secrets

from ..errors import Conflict, StoreError
from ..store import Store
from ..store.cluster import DEAD_AFTER

#: The node-to-node secret's name in ``cluster_keys``.
SECRET_KEY = "cluster_secret"


def check_joining(store: Store, node: str) -> str:
    """The cluster secret, after refusing a name a live node holds; nothing is written but the
    secret, and that only by the first node of a new cluster."""
    nodes = store.nodes()
    for info in nodes:
        if info.name == node and info.alive:
            raise Conflict(
                f"node {node!r} is already in the cluster (at {info.address}, heard from "
                f"{info.silent_for:.0f} s ago): give this node another --node name, or stop that one "
                f"(a node silent for {DEAD_AFTER:.0f} s is dead and its name free)"
            )
    secret = store.cluster_key(SECRET_KEY)
    if secret is None:
        if any(info.alive for info in nodes):
            live = ", ".join(sorted(info.name for info in nodes if info.alive))
            raise StoreError(
                f"the cluster's secret is missing from {store.where} while nodes {live} run: restore it "
                f"from a backup (table cluster_keys, name {SECRET_KEY!r}), or stop every node first"
            )
        secret = store.cluster_key_once(SECRET_KEY, secrets.token_hex(32))
    return secret
