"""Every limit and timeout of a running relay, named, with its default and the reason for it.

``relay serve --limit NAME=VALUE`` overrides one (repeatable); ``relay limits`` prints them all. The
defaults aim at one person's tunnels on a small VPS: generous enough that JupyterLab, a browser with many
tabs and a reconnecting client never meet them, small enough that one hostile address cannot hold the
relay's sockets, memory or SSH channels. docs/security.md says which attack each one answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import BadRequest


def _limit(default: float, unit: str, doc: str) -> Any:
    return field(default=default, metadata={"unit": unit, "doc": doc})


@dataclass(frozen=True)
class Limits:
    """Named limits; seconds are floats, counts and sizes are integers."""

    # -- HTTP front (visitors) ---------------------------------------------------------------------
    http_head_timeout: float = _limit(
        20.0, "s", "a request head must be complete this long after its first byte (slowloris)"
    )
    http_keepalive_timeout: float = _limit(
        75.0, "s", "an idle keep-alive connection is closed when no new request starts in this time"
    )
    http_max_head_bytes: int = _limit(64 * 1024, "bytes", "largest request head; larger gets 431")
    http_max_headers: int = _limit(100, "count", "most header fields in a request head; more gets 431")
    http_body_idle_timeout: float = _limit(
        60.0, "s", "a request body that moves no byte for this long is cut and its connection closed"
    )
    http_max_connections: int = _limit(
        2048, "count", "visitor connections open at once; past it a new one gets 503 and is closed"
    )
    http_max_connections_per_address: int = _limit(
        128, "count", "visitor connections open at once from one address (not --trust-proxy); then 429"
    )
    http_max_connections_per_network: int = _limit(
        512,
        "count",
        "visitor connections open at once from one /24 (IPv4) or /64 (IPv6) network; then 429",
    )
    http_early_drop_connections: int = _limit(
        1024,
        "count",
        "past this many open visitor connections a new one is refused (503) with a chance rising "
        "from 30% to 100% at http_max_connections (OpenSSH's MaxStartups start:rate:full)",
    )
    http_max_streams_per_user: int = _limit(
        512,
        "count",
        "requests and WebSockets in flight at once to all tunnels of one user; past it 503, so one "
        "user's many tunnels cannot hold every visitor slot (behind Caddy, where per-address caps "
        "count the forwarded client address instead)",
    )
    # -- upstream (the tunnel's backend, through an SSH channel) ---------------------------------
    upstream_open_timeout: float = _limit(
        15.0, "s", "the tunnel's client must accept a channel in this time, else 502"
    )
    upstream_response_timeout: float = _limit(
        120.0, "s", "the backend must start its response head this long after the request, else 504"
    )
    stream_idle_timeout: float = _limit(
        300.0,
        "s",
        "a response body, or a WebSocket direction with data waiting, that moves no byte for this "
        "long is closed",
    )
    # -- SSH side (tunnel clients) -----------------------------------------------------------------
    ssh_login_timeout: float = _limit(20.0, "s", "an SSH connection must authenticate in this time")
    ssh_keepalive_interval: float = _limit(
        30.0, "s", "seconds between keepalive probes to an authenticated SSH client"
    )
    ssh_keepalive_count: int = _limit(
        3, "count", "unanswered keepalive probes before the connection (and its tunnels) is dropped"
    )
    ssh_max_unauthenticated: int = _limit(
        100, "count", "SSH connections not yet logged in, in total; past it new ones are closed at once"
    )
    ssh_max_unauthenticated_per_address: int = _limit(
        10, "count", "SSH connections not yet logged in from one address; past it new ones are closed"
    )
    ssh_max_unauthenticated_per_network: int = _limit(
        30,
        "count",
        "SSH connections not yet logged in from one /24 (IPv4) or /64 (IPv6) network; then closed",
    )
    ssh_early_drop_unauthenticated: int = _limit(
        50,
        "count",
        "past this many SSH connections not yet logged in a new one is closed with a chance rising "
        "from 30% to 100% at ssh_max_unauthenticated (OpenSSH's MaxStartups start:rate:full)",
    )
    ssh_max_connections_per_user: int = _limit(
        20, "count", "SSH connections one user may hold at once; the next one is disconnected"
    )
    ssh_max_forwards_per_connection: int = _limit(
        16, "count", "-R forwards one SSH connection may hold; more are refused"
    )
    ssh_max_sessions_per_connection: int = _limit(
        8, "count", "session channels (URL printing, `tunnels --json`) open at once on one connection"
    )
    ssh_max_notices: int = _limit(
        32,
        "count",
        "notices (refusals, take-overs) one SSH connection keeps for its sessions; older ones dropped",
    )
    ssh_max_notice_bytes: int = _limit(
        8 * 1024, "bytes", "total size of one SSH connection's kept notices; older ones dropped"
    )
    ssh_log_burst: int = _limit(
        20,
        "count",
        "log lines about one SSH connection's refused requests at once; then one per second",
    )
    ssh_max_channels_per_tunnel: int = _limit(
        64, "count", "channels open at once to one tunnel's client; past it a visitor gets 503"
    )
    wss_max_frame_bytes: int = _limit(
        256 * 1024,
        "bytes",
        "largest WebSocket frame a client may send on /_relay/ssh (SSH packets are at most ~35 KB); "
        "a bigger one closes the connection (1009)",
    )
    tcp_alias_min_port: int = _limit(
        1, "count", "lowest PORT of a TCP alias (ssh -R NAME:PORT:...; 80 and 443 make HTTP tunnels)"
    )
    tcp_alias_max_port: int = _limit(65535, "count", "highest PORT of a TCP alias (ssh -R NAME:PORT:...)")
    tcp_alias_max_connections: int = _limit(
        16, "count", "connections open at once through one TCP alias (ssh -J, -L); more are refused"
    )
    # -- credentials -------------------------------------------------------------------------------
    auth_failure_limit: int = _limit(
        10, "count", "failed tokens or keys per client address within the window before 429 / refusal"
    )
    auth_failure_window: float = _limit(60.0, "s", "sliding window of auth_failure_limit")
    auth_max_sessions_per_user: int = _limit(
        200, "count", "browser sessions one user holds at once (all hosts); a new one replaces the oldest"
    )
    sso_max_codes: int = _limit(
        50_000, "count", "sign-in hand-off codes outstanding at once; a new one replaces the oldest"
    )
    sso_max_codes_per_user: int = _limit(
        100,
        "count",
        "hand-off codes one user has outstanding (each lives 60 s); past it a sign-in gets 429",
    )
    # -- sharing -----------------------------------------------------------------------------------
    share_max_users_per_host: int = _limit(
        100, "count", "users one name or domain may be shared with; past it share add is refused"
    )
    share_max_links_per_host: int = _limit(
        20, "count", "live share links of one name or domain; past it share link is refused"
    )
    share_max_guests_per_link: int = _limit(
        50,
        "count",
        "browsers that may open one share link (guest sessions); past it the link is used up (410)",
    )
    inspector_rows_per_tunnel: int = _limit(
        500, "count", "requests the live inspector keeps per tunnel (in memory); older ones go first"
    )
    inspector_max_tunnels: int = _limit(
        1000, "count", "tunnels whose requests the inspector keeps; the least recently active go first"
    )
    inspector_backlog: int = _limit(
        64 * 1024,
        "bytes",
        "inspector lines waiting unsent to one watcher (an SSH session, log HOST); past it lines are "
        "skipped for that watcher and it is told how many",
    )
    metrics_max_tunnels: int = _limit(
        1000,
        "count",
        "tunnels with their own metric series (relay_tunnel_*); past it the oldest offline ones go",
    )
    audit_retention: float = _limit(
        90 * 86400.0, "s", "audit events older than this are deleted (checked every minute)"
    )
    audit_max_rows: int = _limit(
        1_000_000, "count", "audit events kept at most; past it the oldest are deleted (checked every minute)"
    )
    audit_max_pending: int = _limit(
        10_000,
        "count",
        "audit events waiting in memory for their batched write (once a second); past it new ones "
        "are dropped and the drop is logged",
    )
    share_recheck_interval: float = _limit(
        5.0,
        "s",
        "how often open WebSockets are checked against their credential, share or link; one that "
        "lost its access (revoked, expired, made private) is closed within this time",
    )
    # -- cluster (a PostgreSQL store) --------------------------------------------------------------
    store_outage_grace: float = _limit(
        60.0,
        "s",
        "while the cluster's database cannot be reached, credentials and shares already cached keep "
        "serving this long after the last contact; then requests that need the store get 503",
    )
    # -- lifecycle ---------------------------------------------------------------------------------
    shutdown_grace: float = _limit(30.0, "s", "SIGTERM waits this long for in-flight requests")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BadRequest(f"limit {f.name} must be a positive number (got {value!r})")

    @property
    def shortest_wait(self) -> float:
        """The shortest of the waits a visitor connection times (how often its watchdog
        looks, at most, while it waits)."""
        return min(
            self.http_head_timeout,
            self.http_keepalive_timeout,
            self.http_body_idle_timeout,
            self.upstream_response_timeout,
            self.stream_idle_timeout,
        )

    def with_overrides(self, assignments: list[str]) -> Limits:
        """``["NAME=VALUE", ...]`` applied on top of these limits; unknown names and bad values raise."""
        return replace(self, **parse_overrides(assignments))


#: Seconds a visitor is told to wait (``Retry-After``) when a capacity limit answered 503.
BUSY_RETRY_AFTER = 2


def describe() -> list[tuple[str, str, str, str]]:
    """(name, default, unit, doc) for every limit, in declaration order (``relay limits``)."""
    return [(f.name, _show(f.default), f.metadata["unit"], f.metadata["doc"]) for f in fields(Limits)]


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """Parse ``NAME=VALUE`` strings against the Limits fields (pure; unit-tested)."""
    types = {f.name: f.type for f in fields(Limits)}
    out: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in types:
            known = ", ".join(types)
            raise BadRequest(f"unknown limit {item!r}: expected NAME=VALUE, NAME one of: {known}")
        text = text.strip()
        try:
            if types[name] in (int, "int"):
                if not text.isascii() or not text.isdigit():
                    raise ValueError(text)
                out[name] = int(text)
            else:
                if not text.isascii():
                    raise ValueError(text)
                out[name] = float(text)
        except ValueError:
            raise BadRequest(f"limit {name}: {text!r} is not a valid number") from None
    return out
