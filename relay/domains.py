"""Custom domains: which hostnames a user may claim, the DNS records that prove ownership, and which
hosts the relay may obtain a certificate for. Pure functions; the store keeps the claims and
:mod:`relay.dnscheck` reads DNS.

Ownership is proved by a TXT record ``_relay-challenge.DOMAIN`` holding a random value the relay
generated for that user's claim: only someone who controls the domain's DNS can publish it, and a
value copied from another user's claim does not verify this user's claim.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import BadRequest, Forbidden
from .names import HostKind, classify_host, is_valid_hostname, normalise_host

#: The label under which the ownership proof lives (like ACME's ``_acme-challenge``).
CHALLENGE_LABEL = "_relay-challenge"
#: Prefix of the TXT value, so a person reading their zone knows what the record is for.
CHALLENGE_PREFIX = "relay-verify="


def validate_domain(raw: str, *, relay_domain: str) -> str:
    """Normalise a custom domain a user wants to claim, or raise with the reason.

    A custom domain is a full hostname outside the relay's own domain: ``NAME.relay-domain`` hosts are
    tunnel names with their own ownership rule, and the relay host is never a tunnel.
    """
    domain = raw.strip().lower().removesuffix(".")
    if not is_valid_hostname(domain) or normalise_host(domain) != domain:
        raise BadRequest(f"invalid domain {raw!r}: expected a hostname such as app.example.com")
    if "." not in domain:
        raise BadRequest(f"invalid domain {raw!r}: a custom domain has at least two labels")
    if domain.replace(".", "").isdigit():
        raise BadRequest(f"invalid domain {raw!r}: an IP address is not a domain")
    if domain == relay_domain:
        raise Forbidden(f"{domain} is the relay's own host and cannot be a tunnel")
    if domain.endswith("." + relay_domain):
        raise BadRequest(
            f"{domain} is under the relay's domain: bind it as a tunnel name (ssh -R NAME:80:...), "
            "not as a custom domain"
        )
    return domain


def challenge_name(domain: str) -> str:
    return f"{CHALLENGE_LABEL}.{domain}"


def new_challenge() -> str:
    """A fresh random TXT value for one user's claim of one domain (128 bits)."""
    return CHALLENGE_PREFIX + secrets.token_hex(16)


def challenge_refusal(domain: str, expected: str, found: Iterable[str]) -> str | None:
    """Does any TXT string found at the challenge name equal ``expected``? None if so, else why not."""
    values = [v.strip() for v in found]
    if expected in values:
        return None
    name = challenge_name(domain)
    if not values:
        return f"no TXT record found at {name}; create it with the value {expected}"
    shown = ", ".join(repr(v[:80]) for v in values[:3])
    return f"the TXT record at {name} holds {shown}, not {expected}"


@dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "name": self.name, "value": self.value}


def records_to_create(domain: str, challenge: str, *, relay_domain: str) -> list[DnsRecord]:
    """The DNS records a user publishes: traffic to the relay, and the ownership proof."""
    return [
        DnsRecord("CNAME", domain, relay_domain),
        DnsRecord("TXT", challenge_name(domain), challenge),
    ]


def certificate_allowed(
    host: str,
    *,
    relay_domain: str,
    name_owned: Callable[[str], bool],
    domain_verified: Callable[[str], bool],
) -> bool:
    """May the relay (or Caddy asking it) obtain a certificate for ``host``?

    Only for hosts the relay serves: its own host, ``NAME.DOMAIN`` for a name a user owns, and verified
    custom domains. Anything else would let a stranger make the relay request certificates for any
    name pointed at it (and exhaust the CA's rate limits).
    """
    normal = normalise_host(host)
    if normal is None or normal != host.strip().lower().removesuffix("."):
        return False  # ports, brackets and odd spellings are not certificate names
    kind = classify_host(normal, relay_domain)
    if kind is HostKind.RELAY:
        return True
    if kind is HostKind.NAME:
        return name_owned(normal[: -len(relay_domain) - 1])
    return kind is HostKind.CUSTOM and domain_verified(normal)


def sni_cert_paths(server_name: str, tls_dir: Path) -> tuple[Path, Path] | None:
    """Where a per-domain certificate for an SNI name lives: ``TLS_DIR/HOST/fullchain.pem`` and
    ``privkey.pem`` (certbot's layout). The name comes from the visitor's TLS handshake, so anything
    that is not a plain hostname is refused before it can become a path (``..``, ``/``, NUL)."""
    host = server_name.strip().lower().removesuffix(".")
    if not is_valid_hostname(host) or "." not in host:
        return None
    folder = tls_dir / host
    return folder / "fullchain.pem", folder / "privkey.pem"
