"""Configuration of a running relay, built once by the CLI and handed down (nothing reads env vars)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import BadRequest
from .limits import Limits
from .names import is_valid_hostname, is_valid_label
from .rewrite import IPNetwork


@dataclass(frozen=True)
class PublicUrl:
    """How visitors reach the relay: scheme and port shared by the relay host and every tunnel host."""

    scheme: str
    domain: str
    port: int | None  # None: the scheme's default port

    @classmethod
    def parse(cls, url: str) -> PublicUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"invalid public URL {url!r}: expected http(s)://HOST[:PORT]")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise BadRequest(f"invalid public URL {url!r}: no path, query or user allowed")
        default = 443 if parts.scheme == "https" else 80
        port = None if parts.port in (None, default) else parts.port
        return cls(parts.scheme, parts.hostname.lower(), port)

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def origin(self, host: str) -> str:
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")

    @property
    def relay_origin(self) -> str:
        return self.origin(self.domain)

    def tunnel_url(self, host: str) -> str:
        return self.origin(host)


def parse_networks(values: list[str]) -> tuple[IPNetwork, ...]:
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise BadRequest(f"invalid --trust-proxy network {value!r}") from None
    return tuple(nets)


def parse_address(value: str, flag: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6]:PORT`` (the address an IP literal or ``localhost``) → (address, port)."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadRequest(f"invalid {flag} {value!r}: expected ADDR:PORT, e.g. 127.0.0.1:9464")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BadRequest(f"invalid {flag} {value!r}: the address must be an IP address") from None
    return host, int(port)


@dataclass(frozen=True)
class Config:
    data_dir: Path
    domain: str = "localhost"
    bind: str = "0.0.0.0"
    http_port: int = 8080
    ssh_port: int = 2222
    https_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_dir: Path | None = None  # per-domain certificates by SNI: TLS_DIR/HOST/{fullchain,privkey}.pem
    dns_server: tuple[str, int] | None = None  # for verifying custom domains; None: the system's
    trust_proxy: tuple[IPNetwork, ...] = field(default_factory=tuple)
    public_url: str | None = None  # None: http://DOMAIN:HTTP_PORT once the port is known
    limits: Limits = field(default_factory=Limits)
    metrics_bind: tuple[str, int] | None = None  # Prometheus metrics listener; None: off
    store_url: str | None = None  # a cluster's PostgreSQL store; None: the data dir's SQLite file
    node: str = ""  # this node's name in the cluster ("" for a single SQLite relay)
    cluster_address: tuple[str, int] | None = None  # where other nodes reach this one

    def __post_init__(self) -> None:
        if not is_valid_hostname(self.domain):
            raise BadRequest(f"invalid --domain {self.domain!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BadRequest("--tls-cert and --tls-key go together")
        if self.https_port is not None and self.tls_cert is None:
            raise BadRequest("--https-port needs --tls-cert and --tls-key")
        if self.tls_dir is not None and self.https_port is None:
            raise BadRequest("--tls-dir needs --https-port (and --tls-cert/--tls-key for other names)")
        if self.metrics_bind is not None and self.metrics_bind[1] in {self.http_port, self.https_port} - {0}:
            raise BadRequest("--metrics-bind must not be a visitor port: metrics are for the operator only")
        self._check_cluster()
        if self.public_url is not None:
            public = PublicUrl.parse(self.public_url)
            if public.domain != self.domain:
                raise BadRequest(
                    f"--public-url host {public.domain!r} must be the relay domain {self.domain!r}"
                )

    def _check_cluster(self) -> None:
        if self.store_url is None:
            if self.node or self.cluster_address is not None:
                raise BadRequest(
                    "--node and --cluster-address are for a cluster: give --store postgresql://… too"
                )
            return
        if not self.store_url.startswith(("postgresql://", "postgres://")):
            raise BadRequest(f"--store must be a postgresql:// URL, not {self.store_url.split(':', 1)[0]!r}")
        if not self.node:
            raise BadRequest(
                "a node of a cluster needs a name: --node NAME (one DNS label, unique in the cluster)"
            )
        if not is_valid_label(self.node):
            raise BadRequest(f"invalid --node {self.node!r}: one DNS label (a-z, 0-9, -)")
        if self.cluster_address is None:
            raise BadRequest(
                "a node of a cluster needs --cluster-address HOST:PORT (where the other nodes reach it)"
            )

    def resolved_public_url(self, http_port: int, https_port: int | None) -> PublicUrl:
        if self.public_url is not None:
            return PublicUrl.parse(self.public_url)
        if https_port is not None:
            return PublicUrl("https", self.domain, None if https_port == 443 else https_port)
        return PublicUrl("http", self.domain, None if http_port == 80 else http_port)
