"""Visitor auth decisions (DESIGN §3.3). Pure functions plus a small in-memory failure limiter.

The proxy gathers facts about a request (which credential it carries, which user that credential
resolves to, the Origin) and these functions decide; nothing here does I/O.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, urlsplit

from .names import normalise_host

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Verdict(Enum):
    ALLOW = "allow"
    LOGIN = "login"  # browser without credentials → 302 to the login origin
    UNAUTHORIZED = "unauthorized"  # 401 JSON
    FORBIDDEN = "forbidden"  # 403: a valid user who is not allowed on this tunnel
    BAD_ORIGIN = "bad_origin"  # 403: cross-origin WebSocket or unsafe method


@dataclass(frozen=True)
class AccessRequest:
    """What the proxy knows about one request to a tunnel host."""

    method: str
    is_upgrade: bool
    origin: str | None  # the Origin header, if any
    accept: str  # the Accept header, "" if absent
    tunnel_origin: str  # "https://name.relay.example.com"
    user_id: int | None  # resolved from a valid credential, None if there was none (or it failed)
    guest: bool = False  # presents a live share link's guest session of this host (guest_may_visit)


def may_visit(user_id: int, *, owner_id: int, shared_with: frozenset[int] = frozenset()) -> bool:
    """A tunnel is open to its owner and the users it is shared with."""
    return user_id == owner_id or user_id in shared_with


def guest_may_visit(*, guest_host: str | None, expires_at: float, host: str, now: float) -> bool:
    """A share link's guest session opens the one host of its link, until the link ends."""
    return guest_host is not None and guest_host == host and now < expires_at


def wants_html(accept: str) -> bool:
    """Browsers navigating ask for text/html; scripts and fetch() calls usually don't."""
    return "text/html" in accept.lower()


def origin_ok(*, method: str, is_upgrade: bool, origin: str | None, tunnel_origin: str) -> bool:
    """WebSocket upgrades and unsafe methods must come from the tunnel's own origin, if from a browser.

    Sibling tunnels are same-site, so SameSite=Lax cookies alone would let one tunnel's page drive
    another's kernel. A request without Origin is not from a browser's cross-origin context.
    """
    if not is_upgrade and method in _SAFE_METHODS:
        return True
    if origin is None:
        return True
    return origin.rstrip("/").lower() == tunnel_origin.lower()


def decide(
    req: AccessRequest, *, owner_id: int, shared_with: frozenset[int] = frozenset(), public: bool = False
) -> Verdict:
    """The verdict for one request to a tunnel, checked before anything reaches the backend."""
    if not origin_ok(
        method=req.method, is_upgrade=req.is_upgrade, origin=req.origin, tunnel_origin=req.tunnel_origin
    ):
        return Verdict.BAD_ORIGIN
    if public or req.guest:
        return Verdict.ALLOW
    if req.user_id is None:
        return (
            Verdict.LOGIN
            if wants_html(req.accept) and req.method in ("GET", "HEAD")
            else Verdict.UNAUTHORIZED
        )
    if may_visit(req.user_id, owner_id=owner_id, shared_with=shared_with):
        return Verdict.ALLOW
    return Verdict.FORBIDDEN


def origin_of(scheme: str, host: str, port: int | None) -> str:
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


_VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def safe_next(
    next_url: str, *, scheme: str, port: int | None, relay_domain: str, is_served_host: Callable[[str], bool]
) -> str | None:
    """Validate a login ``next`` URL: it must point at a host this relay serves, on its own scheme
    and port. Anything else (other sites, userinfo tricks, other schemes) is refused (open redirect)."""
    if not next_url or len(next_url) > 4096 or not next_url.isascii():
        return None  # a browser percent-encodes what it sends; raw non-ASCII is not a URL we made
    try:
        parts = urlsplit(next_url)
    except ValueError:  # e.g. "http://[::1/": an unbalanced IPv6 literal
        return None
    if parts.scheme != scheme or "@" in parts.netloc or "\\" in next_url:
        return None
    host = normalise_host(parts.netloc)
    if host is None or host == relay_domain:
        return None
    try:
        next_port = parts.port
    except ValueError:
        return None
    if next_port != port and not (next_port is None and port in (None, 80 if scheme == "http" else 443)):
        return None
    if not is_served_host(host):
        return None
    return next_url


def safe_local_path(path: str) -> str:
    """A path to redirect to on the same host: must be absolute and not protocol-relative. Anything
    outside visible ASCII is percent-encoded (as UTF-8), since it goes into a Location header."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or any(c < " " for c in path):
        return "/"
    if all("!" <= c <= "~" for c in path):
        return path
    return quote(path, safe=_VISIBLE_ASCII)


class FailureLimiter:
    """Counts failed credentials per client address in a sliding window.

    Once an address has ``limit`` failures inside ``window`` seconds it is refused (HTTP 429, SSH
    auth failure) until the oldest failure ages out. Accounts are never locked: a legitimate user on
    another address is unaffected. Memory is bounded by ``max_clients`` (oldest entries evicted).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max = max_clients
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str) -> list[float]:
        now = self._clock()
        times = [t for t in self._failures.get(client, []) if now - t < self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str) -> int:
        """0 if ``client`` may try now, else the seconds until it may."""
        times = self._recent(client)
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(self.window - (self._clock() - times[-self.limit])))

    def fail(self, client: str) -> None:
        times = self._recent(client)
        times.append(self._clock())
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)
