"""HTTPS the way docs/deploy.md sets it up: Caddy running deploy/Caddyfile with on-demand TLS in front of
a relay started with --public-url https://... --trust-proxy, certificates from a real ACME CA (pebble)
that validates every challenge against Caddy, and names resolved by a DNS server the test controls.

- A tunnel subdomain and the relay's own host get certificates issued by pebble, and the visitor
  reaches the backend through them with a token.
- Hosts the relay does not serve — unknown names under the relay domain, foreign names pointed at
  the relay, a custom domain before its DNS proof — are refused by the ask endpoint, the TLS
  handshake fails, and no certificate is requested from the CA.
- A custom domain, once `relay domain add` / `verify` has checked its TXT record, gets its own
  certificate and carries the tunnel bound with ``ssh -R DOMAIN:80:...``.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from relay.protocol import TLS_ASK_PATH, TOKEN_HEADER

from .acme import (
    Caddy,
    Pebble,
    caddy,
    free_port,
    issuer_cn,
    pebble,
    peer_certificate,
    san_names,
    visitor_session,
)
from .conftest import unique_name
from .dns_server import RunningDns, dns_server
from .harness import Backend, RelayProcess, open_tunnel, start_relay

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("pebble") is None or shutil.which("caddy") is None,
        reason="needs Debian's pebble and caddy (.ci/run installs them)",
    ),
]

#: The relay's domain in these tests; the test DNS server answers 127.0.0.1 for it (the A record).
RELAY_DOMAIN = "relay.test"
PEBBLE_ISSUER_PREFIX = "Pebble Intermediate CA"


@dataclass
class Stack:
    dns: RunningDns
    relay: RelayProcess
    pebble: Pebble
    caddy: Caddy
    root_pem: str  # pebble's root of this run: the only thing the visitor trusts

    def url(self, host: str, path: str = "") -> str:
        return f"https://{host}:{self.caddy.https_port}{path}"

    def point_at_relay(self, host: str) -> None:
        """What the wildcard A record (or a customer's CNAME) does in production."""
        self.dns.zone.set(host, "A", "127.0.0.1")

    def ask(self, host: str) -> int:
        """The relay's answer to Caddy's question, asked the way Caddy asks it."""
        url = f"http://127.0.0.1:{self.relay.http_port}{TLS_ASK_PATH}?domain={host}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def relay_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relay", *args, "--data-dir", str(self.relay.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("acme")
    workdir.chmod(0o700)
    with ExitStack() as resources:
        dns = resources.enter_context(dns_server())
        dns.zone.set(RELAY_DOMAIN, "A", "127.0.0.1")
        # Caddy's ports first: pebble validates on them and the relay's public URL names the HTTPS one.
        http_port, https_port = free_port(), free_port()
        relay = start_relay(
            workdir,
            extra=[
                "--domain",
                RELAY_DOMAIN,
                "--public-url",
                f"https://{RELAY_DOMAIN}:{https_port}",
                "--trust-proxy",
                "127.0.0.1/32",
                "--dns-server",
                dns.address,
            ],
        )
        resources.callback(relay.stop)
        ca = resources.enter_context(pebble(workdir, dns, http_port=http_port, tls_port=https_port))
        front = resources.enter_context(
            caddy(
                workdir,
                ca,
                upstream=f"127.0.0.1:{relay.http_port}",
                http_port=http_port,
                https_port=https_port,
            )
        )
        yield Stack(dns, relay, ca, front, ca.root_pem())


async def get_json(stack: Stack, url: str, token: str) -> tuple[int, Any]:
    async with (
        visitor_session(stack.dns, stack.root_pem) as session,
        session.get(url, headers={TOKEN_HEADER: token}, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.json()


async def assert_pebble_certificate(stack: Stack, host: str) -> None:
    cert = await peer_certificate(stack.dns, host, stack.caddy.https_port, stack.root_pem)
    assert san_names(cert) == [host]
    assert issuer_cn(cert).startswith(PEBBLE_ISSUER_PREFIX)
    assert host in stack.caddy.certificate_hosts()
    # Pebble's VA took a challenge for this very name and validated it against Caddy (http-01 or
    # tls-alpn-01, whichever Caddy chose): a real validation, PEBBLE_VA_ALWAYS_VALID is never set.
    log = stack.pebble.log_text()
    assert re.search(rf'Pulled a task from the Tasks queue: .*Value:"{re.escape(host)}"', log)
    assert "set VALID by completed challenge" in log


async def assert_no_certificate(stack: Stack, host: str) -> None:
    """``host`` resolves to the relay, yet the ask says no, no handshake succeeds, the CA hears nothing."""
    with pytest.raises(ssl.SSLError):
        await peer_certificate(stack.dns, host, stack.caddy.https_port, stack.root_pem)
    # Caddy did ask the relay (nothing else asks before this point), and the relay said no.
    assert f"event=tls.ask_refused host={host}" in stack.relay.log_text()
    assert stack.ask(host) == 404
    assert host not in stack.caddy.certificate_hosts()
    assert host not in stack.pebble.log_text()  # no order, no authorization, no validation for it


async def test_tunnel_subdomain_over_https_with_a_certificate_from_the_ca(
    stack: Stack, backend: Backend
) -> None:
    name = unique_name("acme")
    token = stack.relay.add_user(name)
    host = f"{name}.{RELAY_DOMAIN}"
    stack.point_at_relay(host)
    assert stack.ask(host) == 200  # the user owns the name from the moment the user exists
    tunnel = await open_tunnel(stack.relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    try:
        assert tunnel.stdout_lines == [stack.url(host)]
        status, doc = await get_json(stack, stack.url(host, "/echo"), token)
        assert status == 200
        # Caddy terminated TLS and said so; the relay believed it (trusted proxy) and kept its header.
        assert doc["headers"]["X-Forwarded-Proto"] == "https"
        assert TOKEN_HEADER not in doc["headers"]
        await assert_pebble_certificate(stack, host)
    finally:
        await tunnel.close()


async def test_relay_host_serves_the_login_page_over_https_with_secure_cookies(
    stack: Stack, backend: Backend
) -> None:
    async with (
        visitor_session(stack.dns, stack.root_pem) as session,
        session.get(stack.url(RELAY_DOMAIN, "/_relay/login"), headers={"Accept": "text/html"}) as resp,
    ):
        assert resp.status == 200
        assert 'name="token"' in await resp.text() or "name=token" in await resp.text()
    await assert_pebble_certificate(stack, RELAY_DOMAIN)
    async with (
        visitor_session(stack.dns, stack.root_pem) as session,
        session.get(stack.url(RELAY_DOMAIN, "/_relay/health")) as resp,
    ):
        assert resp.status == 200 and await resp.json() == {"status": "ok"}

    name = unique_name("acme")
    token = stack.relay.add_user(name)
    host = f"{name}.{RELAY_DOMAIN}"
    stack.point_at_relay(host)
    tunnel = await open_tunnel(stack.relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    try:
        async with (
            visitor_session(stack.dns, stack.root_pem) as session,
            session.get(stack.url(host, f"/?relay_token={token}"), allow_redirects=False) as resp,
        ):
            # Behind Caddy the relay knows the visitor came over HTTPS: __Host- cookie, Secure.
            assert resp.status == 303
            [cookie] = resp.headers.getall("Set-Cookie")
            assert cookie.startswith("__Host-") and "Secure" in cookie
            assert resp.headers["Location"] == stack.url(host, "/")
    finally:
        await tunnel.close()


async def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.caddy.http_port, timeout=10)
    try:
        conn.request("GET", "/some/path", headers={"Host": RELAY_DOMAIN})
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status in (301, 308)
    location = urlsplit(resp.headers["Location"])
    assert (location.scheme, location.hostname, location.path) == ("https", RELAY_DOMAIN, "/some/path")
    # Caddy 2.6's catch-all redirect leaves out a non-default HTTPS port; production listens on 443.
    assert location.port in (None, stack.caddy.https_port)


async def test_hosts_the_relay_does_not_serve_get_no_certificate(stack: Stack) -> None:
    n = unique_name("x")
    for host in (
        f"stranger-{n}.example",  # someone else's name pointed at the relay
        f"unclaimed-{n}.{RELAY_DOMAIN}",  # a name under the relay domain that no user owns
        f"deep.{n}.{RELAY_DOMAIN}",  # two labels under the relay domain: never a tunnel
    ):
        stack.point_at_relay(host)
        await assert_no_certificate(stack, host)


async def test_custom_domain_gets_a_certificate_once_verified(stack: Stack, backend: Backend) -> None:
    user = unique_name("cd")
    token = stack.relay.add_user(user)
    domain = f"lab-{user}.customer.test"

    added = stack.relay_cli("domain", "add", domain, "--user", user, "--json")
    assert added.returncode == 0, added.stderr
    claim = json.loads(added.stdout)
    assert claim["domain"] == domain and claim["verified"] is False
    records = {(r["type"], r["name"]): r["value"] for r in claim["records"]}
    assert records[("CNAME", domain)] == RELAY_DOMAIN
    txt_name = f"_relay-challenge.{domain}"

    # The customer points the domain at the relay first: still nothing until the proof is in DNS.
    stack.dns.zone.set(domain, "CNAME", RELAY_DOMAIN)
    refused = stack.relay_cli("domain", "verify", domain, "--dns-server", stack.dns.address)
    assert refused.returncode == 1 and txt_name in refused.stderr
    await assert_no_certificate(stack, domain)

    stack.dns.zone.set(txt_name, "TXT", records[("TXT", txt_name)])
    verified = stack.relay_cli("domain", "verify", domain, "--dns-server", stack.dns.address, "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["verified"] is True
    assert stack.ask(domain) == 200

    tunnel = await open_tunnel(stack.relay, user, f"{domain}:80:127.0.0.1:{backend.port}", token=token)
    try:
        assert tunnel.stdout_lines == [stack.url(domain)]
        status, doc = await get_json(stack, stack.url(domain, "/echo"), token)
        assert status == 200
        assert doc["headers"]["Host"] == f"{domain}:{stack.caddy.https_port}"
        await assert_pebble_certificate(stack, domain)
    finally:
        await tunnel.close()


def test_caddy_used_pebble_as_its_only_ca_and_no_admin_api(stack: Stack) -> None:
    """Runs last in this module: after every issuance above, Caddy's storage holds ACME accounts and
    certificates from pebble on 127.0.0.1 only (no fallback issuer), and its admin API never listened."""
    issuer = f"127.0.0.1-{stack.pebble.port}-dir"
    assert {p.name for p in (stack.caddy.storage / "acme").iterdir()} == {issuer}
    assert {p.name for p in (stack.caddy.storage / "certificates").iterdir()} == {issuer}
    assert "admin endpoint disabled" in stack.caddy.log_text()
