"""The relay's own TLS listener: the token flow sets ``__Host-`` cookies marked Secure."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

import aiohttp
import aiohttp.abc
from aiohttp.abc import ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import unique_name
from .harness import Backend, open_tunnel, start_relay


class LoopbackResolver(aiohttp.abc.AbstractResolver):
    """Every name resolves to 127.0.0.1, as browsers do for *.localhost: nothing leaves loopback."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_https_token_flow_uses_host_prefixed_secure_cookies(workdir: Path, backend: Backend) -> None:
    name = unique_name("tls")
    # One name per host: OpenSSL refuses a wildcard directly under a single-label name like localhost.
    cert, key = self_signed(workdir, ["localhost", f"{name}.localhost"])
    relay = start_relay(workdir, extra=["--https-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        https_port = int(
            next(line for line in relay.output if "HTTPS on" in line)
            .split("HTTPS on ")[1]
            .split(",")[0]
            .rsplit(":", 1)[1]
        )
        token = relay.add_user(name)
        tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
        assert tunnel.stdout_lines == [f"https://{name}.localhost:{https_port}"]
        context = ssl.create_default_context(cafile=str(cert))
        connector = aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver())
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
            url = f"https://{name}.localhost:{https_port}/echo?relay_token={token}"
            async with session.get(url, allow_redirects=False) as resp:
                assert resp.status == 303
                [cookie] = resp.headers.getall("Set-Cookie")
                assert cookie.startswith("__Host-relay_session=")
                assert "Secure" in cookie and "HttpOnly" in cookie and "Domain" not in cookie
            async with session.get(
                f"https://{name}.localhost:{https_port}/echo", headers={"Cookie": cookie.split(";", 1)[0]}
            ) as resp:
                assert resp.status == 200
                doc = await resp.json()
                assert doc["headers"]["X-Forwarded-Proto"] == "https"
                assert doc["cookies"] == {}
        await tunnel.close()
    finally:
        relay.stop()
