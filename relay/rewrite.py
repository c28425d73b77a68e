"""Header rewriting between visitor and backend. Pure functions.

Rules (DESIGN §3.3): the relay's own credentials (header, cookies) never reach the backend; a backend
cannot set or shadow the relay's cookies; forwarding headers are the relay's, not the visitor's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, unquote_plus

from .http1 import Headers, connection_tokens, get_all, lowered_names
from .protocol import DASHBOARD_HEADER_PREFIX, RELAY_COOKIE_NAMES, TOKEN_HEADER

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Headers addressed to the relay as a proxy: never passed on.
_PROXY_ONLY = frozenset({"proxy-authorization", "proxy-connection"})
#: Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, visitor↔relay or relay↔backend,
#: and are removed before forwarding, with every field that Connection names. ``Upgrade`` goes on only
#: with a WebSocket (or other) upgrade that the relay is forwarding.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "upgrade"})
#: Never removed because Connection names them: the relay forwards bodies as framed by these, and
#: routes by Host; dropping one on the visitor's say-so would make relay and backend disagree.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding"})
#: Response fields whose effect reaches beyond the tunnel's own host: ``Clear-Site-Data: "cookies"``
#: clears cookies for the whole site (the relay's domain), signing the visitor out of every tunnel.
_BEYOND_HOST = frozenset({"clear-site-data"})


def _connection_scoped(tokens: set[str]) -> frozenset[str]:
    """The fields to remove before forwarding a message whose Connection lists ``tokens``."""
    # The usual tokens (keep-alive, close, upgrade) add nothing: no new set per message then.
    listed = tokens - _FRAMING - _HOP_BY_HOP
    return _HOP_BY_HOP | listed if listed else _HOP_BY_HOP


#: Visitor headers that only the relay may set towards the backend.
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}
)


def strip_relay_cookies(value: str) -> str:
    """Drop the relay's cookies from a ``Cookie`` header value, keeping every other pair as sent."""
    kept = []
    for pair in value.split(";"):
        name = pair.split("=", 1)[0].strip()
        if name and name not in RELAY_COOKIE_NAMES:
            kept.append(pair.strip())
    return "; ".join(kept)


def cookie_value(headers: Headers, name: str) -> str | None:
    """The value of cookie ``name`` across all ``Cookie`` headers (first wins)."""
    for value in get_all(headers, "cookie"):
        for pair in value.split(";"):
            k, sep, v = pair.strip().partition("=")
            if sep and k == name:
                return v.strip().strip('"')
    return None


def is_trusted(peer_ip: str, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted:
        return False  # the usual case, on every request: no address parsing
    try:
        addr = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def client_address(peer_ip: str, headers: Headers, trusted: Sequence[IPNetwork]) -> str:
    """The visitor's address: the peer, or for a trusted proxy the last address it appended."""
    if not is_trusted(peer_ip, trusted):
        return peer_ip
    chain = [a.strip() for v in headers if v[0].lower() == "x-forwarded-for" for a in v[1].split(",")]
    for addr in reversed(chain):
        if addr and not is_trusted(addr, trusted):
            return addr
    return peer_ip


def request_scheme(conn_scheme: str, peer_ip: str, headers: Headers, trusted: Sequence[IPNetwork]) -> str:
    """How the visitor reached the relay: the listener's scheme, or what a trusted front proxy (Caddy
    terminating TLS) says in ``X-Forwarded-Proto``. Anyone else's header is ignored: it would let a
    plain-HTTP visitor pose as HTTPS and get credentials handled over a clear link."""
    if not is_trusted(peer_ip, trusted):
        return conn_scheme
    values = [v.strip().lower() for n, v in headers if n.lower() == "x-forwarded-proto"]
    return values[-1] if values and values[-1] in ("http", "https") else conn_scheme


def upstream_headers(headers: Headers, *, peer_ip: str, scheme: str, trusted: Sequence[IPNetwork]) -> Headers:
    """The request headers the backend sees."""
    trusted_peer = is_trusted(peer_ip, trusted)
    out: Headers = []
    prior_for: list[str] = []
    proto = scheme
    host = None
    tokens = connection_tokens(headers)
    hop = _connection_scoped(tokens)
    upgrade = "upgrade" in tokens and bool(get_all(headers, "upgrade"))
    for lname, (name, value) in zip(lowered_names(headers), headers, strict=True):
        if lname == TOKEN_HEADER or lname in _PROXY_ONLY or lname.startswith(DASHBOARD_HEADER_PREFIX):
            continue
        if lname in hop:
            if upgrade and lname == "upgrade":
                out.append((name, value))
            continue
        if lname == "cookie":
            value = strip_relay_cookies(value)
            if value:
                out.append((name, value))
            continue
        if lname in _FORWARDING:
            if trusted_peer and lname == "x-forwarded-for":
                prior_for.append(value)
            elif trusted_peer and lname == "x-forwarded-proto" and value in ("http", "https"):
                proto = value
            elif trusted_peer and lname in ("forwarded", "x-real-ip"):
                out.append((name, value))
            continue
        if lname == "host":
            host = value
        out.append((name, value))
    if upgrade:
        out.append(("Connection", "Upgrade"))
    out.append(("X-Forwarded-For", ", ".join([*prior_for, peer_ip])))
    out.append(("X-Forwarded-Proto", proto))
    if host is not None:
        out.append(("X-Forwarded-Host", host))
    return out


def set_cookie_allowed(value: str, relay_domain: str) -> bool:
    """May a backend's ``Set-Cookie`` reach the visitor?

    Refused: the relay's cookie names (in any ``__Host-``/``__Secure-`` form), and any ``Domain``
    attribute that widens the cookie to the relay's domain or one of its parents, where it would
    reach every other user's tunnel.
    """
    name = value.split("=", 1)[0].strip()
    bare = name.removeprefix("__Host-").removeprefix("__Secure-")
    if name in RELAY_COOKIE_NAMES or bare in RELAY_COOKIE_NAMES:
        return False
    for attr in value.split(";")[1:]:
        key, _, attr_value = attr.strip().partition("=")
        if key.strip().lower() != "domain":
            continue
        dom = attr_value.strip().lower().lstrip(".").removesuffix(".")
        if dom and (relay_domain == dom or relay_domain.endswith("." + dom)):
            return False
    return True


def downstream_headers(headers: Headers, relay_domain: str, *, upgrade: bool = False) -> Headers:
    """The response headers the visitor sees: without hop-by-hop fields (the relay sets its own
    ``Connection``; a ``101`` keeps ``Connection: Upgrade`` and ``Upgrade``), without fields that act
    beyond the tunnel's host, and without cookies the backend may not set."""
    hop = _connection_scoped(connection_tokens(headers))
    out: Headers = []
    for lname, (name, value) in zip(lowered_names(headers), headers, strict=True):
        if lname in hop or lname in _BEYOND_HOST:
            if upgrade and lname == "upgrade":
                out.append((name, value))
            continue
        if lname == "set-cookie" and not set_cookie_allowed(value, relay_domain):
            continue
        out.append((name, value))
    if upgrade:
        out.append(("Connection", "Upgrade"))
    return out


def session_cookie(name: str, value: str, *, secure: bool, max_age: int, path: str = "/") -> str:
    """A host-only session cookie (no Domain attribute), HttpOnly, SameSite=Lax."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = path
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    morsel["max-age"] = max_age
    if secure:
        morsel["secure"] = True
    return morsel.OutputString()


def query_params(query: str) -> dict[str, str]:
    """Decoded ``name=value`` pairs (first occurrence wins); never raises, whatever the visitor sent."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)
    return params


def without_param(query: str, name: str) -> str:
    """``query`` with every ``name=...`` pair removed and the rest kept byte for byte."""
    kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != name]
    return "&".join(kept)
