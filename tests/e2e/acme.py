"""A real ACME flow on loopback: Debian's ``pebble`` as the CA and ``caddy`` running deploy/Caddyfile
itself, in front of a real relay, with names resolved by the test DNS server (tests/e2e/dns_server.py).

Nothing leaves loopback: pebble listens on 127.0.0.1 and validates challenges by resolving names
through the test DNS server (``-dnsserver``), which answers 127.0.0.1; Caddy binds 127.0.0.1 only, its
only CA is pebble, its admin API is off and its storage lives in the test's temp dir.

Pebble validates for real (``PEBBLE_VA_ALWAYS_VALID`` is never set): it connects back to Caddy's
HTTP port (http-01) or HTTPS port (tls-alpn-01), so a certificate is issued only when Caddy really
answers the challenge for that name, i.e. when the relay's ``ask`` endpoint said yes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp.abc
import dns.asyncresolver as dns_async
from aiohttp.abc import ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .dns_server import RunningDns

REPO = Path(__file__).resolve().parents[2]
CADDYFILE = REPO / "deploy" / "Caddyfile"
#: Seconds to wait for a process to listen; pebble and Caddy take well under a second here.
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (Caddy and pebble take fixed ports from their config)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {START_TIMEOUT} s:\n{log.read_text()}")


def stop_process(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


# -- pebble ---------------------------------------------------------------------------------------------


def write_pebble_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 for pebble's own HTTPS listeners.

    Debian's pebble package ships no test certificates, so each run makes its own; they live in the
    test's temp dir and die with it. Returns (CA certificate, server certificate, server key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay test: pebble WFE CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("wfe-ca.pem", "wfe-cert.pem", "wfe-key.pem"))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


@dataclass
class Pebble:
    proc: subprocess.Popen[bytes]
    port: int
    mgmt_port: int
    wfe_ca: Path  # what an ACME client must trust to talk to pebble's HTTPS API
    log_path: Path

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.wfe_ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}{path}", context=context) as resp:
            return bytes(resp.read())

    def root_pem(self) -> str:
        """The root pebble issues under; it is generated at every start, so it is fetched, not shipped."""
        return self._get("/roots/0").decode()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def pebble(workdir: Path, dns: RunningDns, *, http_port: int, tls_port: int) -> Iterator[Pebble]:
    """Pebble on 127.0.0.1, validating http-01 on ``http_port`` and tls-alpn-01 on ``tls_port``."""
    ca, cert, key = write_pebble_tls(workdir)
    port, mgmt_port = free_port(), free_port()
    config = workdir / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{mgmt_port}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after 0-15 s
        "PEBBLE_WFE_NONCEREJECT": "0",  # no deliberate badNonce errors: a test, not a fuzzer
    }
    log_path = workdir / "pebble.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", dns.address, "-strict=false"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    try:
        wait_listening(port, proc, log_path)
        wait_listening(mgmt_port, proc, log_path)
        yield Pebble(proc, port, mgmt_port, ca, log_path)
    finally:
        stop_process(proc, log)


# -- Caddy ----------------------------------------------------------------------------------------------


@dataclass
class Caddy:
    proc: subprocess.Popen[bytes]
    http_port: int
    https_port: int
    storage: Path  # Caddy's data dir: certificates, ACME account keys
    log_path: Path

    def certificate_hosts(self) -> set[str]:
        """Hosts Caddy holds a certificate for, from its storage (certificates/ISSUER/HOST/HOST.crt)."""
        root = self.storage / "certificates"
        return {p.stem for p in root.glob("*/*/*.crt")} if root.exists() else set()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def caddy(workdir: Path, ca: Pebble, *, upstream: str, http_port: int, https_port: int) -> Iterator[Caddy]:
    """``caddy run`` with deploy/Caddyfile, its variables set for this test (as compose would set them)."""
    home = workdir / "caddy-home"
    home.mkdir(mode=0o700)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        # Go's TLS reads its trusted roots from here: Caddy trusts pebble's API and nothing else.
        "SSL_CERT_FILE": str(ca.wfe_ca),
        "CADDY_ADMIN": "off",
        "CADDY_BIND": "127.0.0.1",
        "CADDY_HTTP_PORT": str(http_port),
        "CADDY_HTTPS_PORT": str(https_port),
        "ACME_CA": ca.directory,
        "RELAY_UPSTREAM": upstream,
    }
    log_path = workdir / "caddy.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        ["caddy", "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=home,
    )
    try:
        wait_listening(https_port, proc, log_path)
        wait_listening(http_port, proc, log_path)
        yield Caddy(proc, http_port, https_port, home / "data" / "caddy", log_path)
    finally:
        stop_process(proc, log)


# -- the visitor's side ---------------------------------------------------------------------------------


class DnsResolver(aiohttp.abc.AbstractResolver):
    """aiohttp resolving through the test DNS server, like pebble does: CNAMEs are followed, unknown
    names fail, and every answer is a loopback address."""

    def __init__(self, dns: RunningDns) -> None:
        self.resolver = dns_async.Resolver(configure=False)
        self.resolver.nameservers = ["127.0.0.1"]
        self.resolver.port = dns.port
        self.resolver.lifetime = 5.0

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        answer = await self.resolver.resolve(host, "A")
        addresses = [r.address for r in answer]
        assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
        return [
            ResolveResult(
                hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


def visitor_session(dns: RunningDns, root_pem: str) -> aiohttp.ClientSession:
    """A client that trusts only pebble's root and resolves names through the test DNS server."""
    context = ssl.create_default_context(cadata=root_pem)
    connector = aiohttp.TCPConnector(ssl=context, resolver=DnsResolver(dns))
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


def _handshake(address: str, port: int, host: str, root_pem: str) -> dict[str, Any]:
    context = ssl.create_default_context(cadata=root_pem)
    with (
        socket.create_connection((address, port), timeout=30) as raw,
        # The handshake runs inside the block, so a refused one still closes the TLS socket.
        context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False) as tls,
    ):
        tls.do_handshake()
        return tls.getpeercert()  # type: ignore[return-value]  # verified, so never None


async def peer_certificate(dns: RunningDns, host: str, port: int, root_pem: str) -> dict[str, Any]:
    """TLS handshake with SNI ``host`` at the address DNS gives for it, verified against pebble's root
    (``ssl.SSLError`` if Caddy has no certificate to offer); returns the verified certificate."""
    resolver = DnsResolver(dns)
    [first, *_] = await resolver.resolve(host, port)
    return await asyncio.to_thread(_handshake, first["host"], port, host, root_pem)


def issuer_cn(cert: dict[str, Any]) -> str:
    return str(dict(pair[0] for pair in cert["issuer"])["commonName"])


def san_names(cert: dict[str, Any]) -> list[str]:
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
