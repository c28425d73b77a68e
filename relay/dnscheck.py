"""Reads the ownership proof of a custom domain from DNS (dnspython). The resolver is the system's,
or one ``HOST:PORT`` given on the command line (tests run their own DNS server on loopback)."""

from __future__ import annotations

import ipaddress

import dns.asyncresolver
import dns.exception
import dns.resolver

from .domains import challenge_name
from .errors import BadRequest, RelayError

#: Seconds a whole lookup may take (all servers and retries).
DNS_LIFETIME = 8.0


def parse_dns_server(value: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT`` → (address, port); the address must be an IP literal."""
    text = value.strip()
    port = 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise BadRequest(f"invalid --dns-server {value!r}: expected HOST:PORT")
            port_text = rest[1:]
        else:
            port_text = ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BadRequest(f"invalid --dns-server port in {value!r}")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BadRequest(f"invalid --dns-server {value!r}: give the server's IP address") from None
    return host, port


class DnsChecker:
    """Looks up TXT records, from the system resolver or one configured server."""

    def __init__(self, server: tuple[str, int] | None = None) -> None:
        self.server = server

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self.server is None:
            resolver = dns.asyncresolver.Resolver()
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [self.server[0]]
            resolver.port = self.server[1]
        resolver.lifetime = DNS_LIFETIME
        # A fresh answer every time: a user who just fixed their record must not wait for a cache.
        resolver.cache = None
        return resolver

    async def challenge_values(self, domain: str) -> list[str]:
        """The TXT strings published at ``_relay-challenge.DOMAIN`` (empty if there are none).

        Raises :class:`RelayError` when DNS itself fails, so "no record" and "could not ask" read
        differently to the user.
        """
        name = challenge_name(domain)
        try:
            answer = await self._resolver().resolve(name, "TXT", raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise RelayError(f"DNS lookup of {name} timed out; try again shortly") from None
        except dns.exception.DNSException as exc:
            raise RelayError(f"DNS lookup of {name} failed: {exc}") from None
        values = []
        for rdata in answer:
            # A TXT record is a list of up to-255-byte strings that form one value together.
            values.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        return values
