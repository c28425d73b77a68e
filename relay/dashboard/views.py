"""What the dashboard's pages show, gathered from the store, the registry and the inspector (no I/O
beyond the store's reads; the templates escape everything)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import audit
from ..config import PublicUrl
from ..inspector import Inspector
from ..store import ShareInfo, Store, User
from ..tunnels import Registry


@dataclass(frozen=True)
class HostRow:
    host: str
    url: str
    live: bool
    since: float | None
    client: str
    last_seen: float | None
    bytes_in: int
    bytes_out: int
    requests: int
    channels: int
    public: bool
    owner: str


def _row(store: Store, registry: Registry, public: PublicUrl, host: str, owner: str) -> HostRow:
    tunnel = registry.get(host)
    if tunnel is not None:
        return HostRow(
            host, public.tunnel_url(host), True, tunnel.since, tunnel.client, None, tunnel.bytes_in,
            tunnel.bytes_out, tunnel.requests, tunnel.channels, store.is_public(host), owner,
        )  # fmt: skip
    # In a cluster another node may hold it: live, with the figures that node last wrote.
    other = store.live_elsewhere(host, registry.node) if store.clustered else None
    if other is not None:
        return HostRow(
            host, public.tunnel_url(host), True, other.since, f"{other.client} (node {other.node})", None,
            other.bytes_in, other.bytes_out, 0, 0, store.is_public(host), owner,
        )  # fmt: skip
    seen = store.last_seen(host)
    return HostRow(
        host, public.tunnel_url(host), False, None, seen[1] if seen else "", seen[0] if seen else None,
        0, 0, 0, 0, store.is_public(host), owner,
    )  # fmt: skip


def own_hosts(store: Store, registry: Registry, public: PublicUrl, user: User) -> list[str]:
    """The user's names and verified domains, and any live tunnel of theirs (sorted)."""
    hosts = {f"{name}.{public.domain}" for name, _ in store.list_names(user.name)}
    hosts |= {c.domain for c in store.list_domains(user.name) if c.verified}
    hosts |= {t.host for t in registry.for_user(user.id)}
    return sorted(hosts)


def host_rows(
    store: Store, registry: Registry, public: PublicUrl, user: User
) -> tuple[list[HostRow], list[HostRow]]:
    """(the user's own hosts, the hosts shared with them)."""
    own = [
        _row(store, registry, public, host, user.name) for host in own_hosts(store, registry, public, user)
    ]
    shared = [_row(store, registry, public, host, owner) for host, owner in store.hosts_shared_with(user.id)]
    return own, shared


def tunnel_view(
    store: Store, registry: Registry, inspector: Inspector, public: PublicUrl, host: str, user: User
) -> dict[str, Any]:
    """One host's page: its state, its inspector rows (newest first), shares and links, audit."""
    owner_id = (
        store.name_owner(host.partition(".")[0])
        if host.endswith("." + public.domain)
        else store.verified_domain_owner(host)
    )
    owner = store.user_by_id(owner_id) if owner_id is not None else None
    shares: list[ShareInfo] = store.list_shares(host=host)
    reader = None if user.is_admin else user
    return {
        "row": _row(store, registry, public, host, owner.name if owner else "?"),
        "rows": list(reversed(inspector.recent(host))),
        "shares": [s for s in shares if s.kind != "public"],
        "events": audit.read(store, reader=reader, host=host, limit=50),
    }
