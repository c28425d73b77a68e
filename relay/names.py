"""Hostname rules: what a tunnel name may be, which host a ``-R`` bind address selects, and how a
request's Host is normalised. Pure functions; routing and ownership depend on them being exact."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum

from .errors import BadRequest, Forbidden
from .protocol import DEFAULT_BIND_ADDRESSES, TUNNEL_PORTS

#: One lowercase DNS label (DESIGN §3.2).
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: A hostname: dot-separated labels, at most 253 characters.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)

#: Names nobody may claim: they look like the relay's own services or invite phishing.
RESERVED_NAMES = frozenset(
    {
        "www", "login", "admin", "api", "relay", "mail", "smtp", "imap", "pop", "ftp", "ssh",
        "ns", "ns1", "ns2", "dns", "mx", "root", "auth", "sso", "oauth", "account", "accounts",
        "static", "assets", "cdn", "status", "health", "metrics", "dashboard", "support", "help",
        "security", "billing", "autoconfig", "autodiscover", "wpad", "localhost", "acme",
    }
)  # fmt: skip
#: Precompiled: normalise_host runs on every request.
_PORT_SUFFIX = re.compile(r":[0-9]{1,5}")
_PORT = re.compile(r"[0-9]{1,5}")
_IP6ISH = re.compile(r"[0-9a-f:.]+")


def _is_ipv6(text: str) -> bool:
    """A plain IPv6 address (no zone, which has no meaning beyond one machine's link)."""
    if not _IP6ISH.fullmatch(text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def validate_name(name: str) -> str:
    """Return ``name`` if it is a claimable tunnel name, else raise with the reason."""
    if not _LABEL.fullmatch(name):
        raise BadRequest(
            f"invalid name {name!r}: use one lowercase DNS label "
            "(a-z, 0-9 and '-', 1-63 characters, not starting or ending with '-')"
        )
    if name.startswith("xn--") or name[2:4] == "--":
        raise BadRequest(f"invalid name {name!r}: punycode and '--' at position 3 are not allowed")
    if name in RESERVED_NAMES:
        raise Forbidden(f"name {name!r} is reserved")
    return name


def is_valid_label(text: str) -> bool:
    """One lowercase DNS label (a node's name, say)."""
    return bool(_LABEL.fullmatch(text))


def is_valid_hostname(host: str) -> bool:
    return bool(_HOSTNAME.fullmatch(host))


def normalise_host(raw: str) -> str | None:
    """The one Host value routing and auth use: lowercase, no port, no trailing dot.

    Returns None for anything that is not a plain DNS name or IP literal (such a request gets 400).
    """
    # ASCII first: str.lower() folds some non-ASCII letters onto ASCII ones (U+212A KELVIN SIGN → "k"),
    # which would let a Host that other parsers refuse route to an existing tunnel.
    if not raw.isascii():
        return None
    value = raw.strip().lower()
    if not value:
        return None
    if value.startswith("["):  # IPv6 literal, possibly with a port
        end = value.find("]")
        if end < 0:
            return None
        rest = value[end + 1 :]
        if rest and not _PORT_SUFFIX.fullmatch(rest):
            return None
        inner = value[1:end]
        return f"[{inner}]" if _is_ipv6(inner) else None
    host, sep, port = value.partition(":")
    if sep and not (_PORT.fullmatch(port) and int(port) <= 65535):
        return None
    host = host.removesuffix(".")
    return host if is_valid_hostname(host) else None


class HostKind(Enum):
    """What a (normalised) Host is to the relay: the one rule, used wherever a host is judged."""

    RELAY = "relay"  # the relay's own host: the login origin
    NAME = "name"  # NAME.DOMAIN, one label under the relay's domain: a tunnel name
    NESTED = "nested"  # deeper under the relay's domain: never served
    CUSTOM = "custom"  # anything else: served only as a verified custom domain


def classify_host(host: str, relay_domain: str) -> HostKind:
    if host == relay_domain:
        return HostKind.RELAY
    suffix = "." + relay_domain
    if host.endswith(suffix):
        return HostKind.NESTED if "." in host[: -len(suffix)] else HostKind.NAME
    return HostKind.CUSTOM


@dataclass(frozen=True)
class BindTarget:
    """What a ``-R`` bind address asks for: a subdomain name, or a whole custom domain."""

    host: str
    name: str | None  # set for NAME.DOMAIN hosts, None for custom domains


def resolve_bind(bind_address: str, *, default_name: str, domain: str) -> BindTarget:
    """Map the bind address of ``ssh -R BIND:80:...`` to the public host it selects.

    ``NAME`` → ``NAME.DOMAIN``; ``NAME.DOMAIN`` → the same; empty, ``localhost`` or ``0.0.0.0`` →
    the user's default name; any other full hostname → a custom domain (ownership checked elsewhere).
    """
    if not bind_address.isascii():  # see normalise_host: no case folding onto ASCII names
        raise BadRequest(f"invalid name {bind_address!r}: names are ASCII")
    bind = bind_address.strip().lower().removesuffix(".")
    if bind in DEFAULT_BIND_ADDRESSES:
        bind = default_name
    suffix = "." + domain
    if bind.endswith(suffix):
        bind = bind[: -len(suffix)]
        if "." in bind:
            raise BadRequest(f"invalid name {bind!r}: a tunnel name is one label under {domain}")
    if "." not in bind:
        name = validate_name(bind)
        return BindTarget(host=f"{name}.{domain}", name=name)
    if not is_valid_hostname(bind):
        raise BadRequest(f"invalid hostname {bind_address!r}")
    if bind == domain:
        raise Forbidden(f"{domain} is the relay's own host and cannot be a tunnel")
    return BindTarget(host=bind, name=None)


def claim_refusal(name: str, *, claimant_id: int, owner_id: int | None) -> str | None:
    """Ownership rule: the first claimant keeps a name until an admin releases it.

    Returns the refusal the claimant reads, or None if the claim is allowed. The owner is not named.
    """
    if owner_id is None or owner_id == claimant_id:
        return None
    return f"name {name!r} is owned by another user; choose another name"


def domain_bind_refusal(domain: str, *, claimant_id: int, owner_id: int | None) -> str | None:
    """A custom domain may be bound only by the user who verified it. None if allowed, else why not."""
    if owner_id == claimant_id:
        return None
    if owner_id is None:
        return (
            f"{domain} is not a verified custom domain of yours; claim it with "
            f"`ssh RELAY -- domain add {domain}`, publish the TXT record it prints, then "
            f"`ssh RELAY -- domain verify {domain}`"
        )
    return f"{domain} is a verified custom domain of another user"


def alias_port_refusal(port: int, *, lowest: int, highest: int) -> str | None:
    """Which ``-R NAME:PORT`` ports make a TCP alias: not 80/443 (those make HTTP tunnels), not 0 (a
    port the relay would pick: an alias is named by its port), and within the relay's allowed range."""
    if port in TUNNEL_PORTS:
        return f"port {port} makes an HTTP tunnel, not a TCP alias"
    if port == 0:
        return "a TCP alias needs its port (ssh -R NAME:PORT:localhost:LOCALPORT, PORT not 0)"
    if not lowest <= port <= highest:
        return f"TCP aliases on this relay use ports {lowest}-{highest} (got {port})"
    return None


def jump_host(destination: str, *, domain: str) -> str | None:
    """The host a ``direct-tcpip`` (``ssh -J``, ``-L``, ``-W``) names, if it can name an alias at all:
    ``NAME`` or ``NAME.DOMAIN`` → ``NAME.DOMAIN``, a custom domain → itself. Addresses, ``localhost``,
    the relay's own host and anything malformed → None: those are refused with no connection made
    (the relay is never a proxy into its own network, its loopback or a metadata address)."""
    if not destination.isascii():
        return None
    dest = destination.strip().lower().removesuffix(".")
    if not dest or dest in DEFAULT_BIND_ADDRESSES or dest == domain or _is_ip(dest):
        return None
    if dest.rsplit(".", 1)[-1].isdigit():  # 127.1, 2130706433: what inet_aton would read as addresses
        return None
    suffix = "." + domain
    if dest.endswith(suffix):
        dest = dest[: -len(suffix)]
        if "." in dest:
            return None
    if "." not in dest:
        try:
            return f"{validate_name(dest)}.{domain}"
        except BadRequest:
            return None
    return dest if is_valid_hostname(dest) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True
