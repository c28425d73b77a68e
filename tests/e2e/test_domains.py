"""Custom domains end to end: ownership proved through a real DNS server on 127.0.0.1 (dnslib), bound
with the real OpenSSH client, visited with the same token checks and SSO hand-off as a subdomain, the
``tls-ask`` answers Caddy relies on, and the relay's own TLS picking a certificate by SNI."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from cryptography import x509

from .conftest import unique_name
from .dns_server import RunningDns, dns_server
from .harness import (
    Backend,
    RelayProcess,
    SshTunnel,
    cookie_pair,
    fetch,
    open_tunnel,
    ssh_exec,
    start_client,
    start_relay,
)
from .test_https import LoopbackResolver, self_signed


@pytest.fixture(scope="module")
def dns() -> Iterator[RunningDns]:
    with dns_server() as server:
        yield server


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, dns: RunningDns) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("relay")
    workdir.chmod(0o700)
    proc = start_relay(workdir, extra=["--dns-server", dns.address])
    yield proc
    proc.stop()


def relay_cli(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args, "--data-dir", str(relay.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def claim(relay: RelayProcess, domain: str, user: str) -> dict[str, object]:
    out = relay_cli(relay, "domain", "add", domain, "--user", user, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def challenge_of(doc: dict[str, object]) -> tuple[str, str]:
    records = doc["records"]
    assert isinstance(records, list)
    [txt] = [r for r in records if r["type"] == "TXT"]
    return str(txt["name"]), str(txt["value"])


def verify(relay: RelayProcess, dns: RunningDns, domain: str) -> subprocess.CompletedProcess[str]:
    return relay_cli(relay, "domain", "verify", domain, "--dns-server", dns.address)


async def ask(relay: RelayProcess, host: str, ask_host: str = "127.0.0.1") -> int:
    return (await fetch(relay, ask_host, f"/_relay/tls-ask?domain={host}")).status


@pytest.fixture
async def verified(relay: RelayProcess, dns: RunningDns) -> AsyncIterator[tuple[str, str, str]]:
    """A user with a freshly verified custom domain: (user, token, domain)."""
    user = unique_name("dom")
    token = relay.add_user(user)
    domain = f"{user}-lab.example.test"
    name, value = challenge_of(claim(relay, domain, user))
    dns.zone.set(name, "TXT", value)
    out = verify(relay, dns, domain)
    assert out.returncode == 0, out.stderr
    yield user, token, domain
    dns.zone.remove(name, "TXT")


async def test_dns_proves_ownership_missing_and_wrong_records_are_refused(
    relay: RelayProcess, dns: RunningDns
) -> None:
    user = unique_name("dns")
    relay.add_user(user)
    domain = f"{user}.example.test"
    doc = claim(relay, domain, user)
    assert doc["verified"] is False and doc["user"] == user
    assert {"type": "CNAME", "name": domain, "value": "localhost"} in doc["records"]  # type: ignore[operator]
    name, value = challenge_of(doc)
    assert name == f"_relay-challenge.{domain}"

    missing = verify(relay, dns, domain)
    assert missing.returncode == 1
    assert "no TXT record" in missing.stderr and value in missing.stderr

    dns.zone.set(name, "TXT", "relay-verify=0000")
    wrong = verify(relay, dns, domain)
    assert wrong.returncode == 1 and "relay-verify=0000" in wrong.stderr
    assert await ask(relay, domain) == 404

    dns.zone.set(name, "TXT", "unrelated-value", value)  # other TXT strings beside it are fine
    right = verify(relay, dns, domain)
    assert right.returncode == 0, right.stderr
    assert "is verified for" in right.stdout
    listed = json.loads(relay_cli(relay, "domain", "list", "--json").stdout)
    assert any(d["domain"] == domain and d["verified"] for d in listed["domains"])
    assert await ask(relay, domain) == 200


async def test_a_dns_server_that_does_not_answer_is_a_clear_error(relay: RelayProcess) -> None:
    user = unique_name("dns")
    relay.add_user(user)
    domain = f"{user}.example.test"
    claim(relay, domain, user)
    # A UDP port on loopback with nobody listening: the lookup fails, and says so.
    out = relay_cli(relay, "domain", "verify", domain, "--dns-server", "127.0.0.1:9")
    assert out.returncode == 1
    assert "DNS lookup" in out.stderr


async def test_the_owner_binds_a_verified_domain_and_visitors_need_a_token(
    relay: RelayProcess, backend: Backend, verified: tuple[str, str, str]
) -> None:
    user, token, domain = verified
    tunnel = await open_tunnel(relay, user, f"{domain}:80:127.0.0.1:{backend.port}", token=token)
    try:
        assert tunnel.stdout_lines == [f"http://{domain}:{relay.http_port}"]
        before = len(backend.seen)
        anonymous = await fetch(relay, domain, "/echo")
        assert anonymous.status == 401
        stranger = relay.add_user(unique_name("str"))
        other = await fetch(relay, domain, "/echo", headers={"X-Relay-Token": stranger})
        assert other.status == 403
        assert len(backend.seen) == before  # nothing reached the backend

        ok = await fetch(relay, domain, "/echo?x=1", headers={"X-Relay-Token": token})
        assert ok.status == 200
        echoed = ok.json()
        assert echoed["path"] == "/echo?x=1"
        assert "X-Relay-Token" not in echoed["headers"]
        assert echoed["headers"]["X-Forwarded-Host"] == domain
    finally:
        await tunnel.close()
    offline = await fetch(relay, domain, "/echo", headers={"X-Relay-Token": token})
    assert offline.status == 502 and b"offline" in offline.body


async def test_sso_hand_off_works_on_a_custom_domain(
    relay: RelayProcess, backend: Backend, verified: tuple[str, str, str]
) -> None:
    user, token, domain = verified
    tunnel = await open_tunnel(relay, user, f"{domain}:80:127.0.0.1:{backend.port}", token=token)
    try:
        origin = f"http://{domain}:{relay.http_port}"
        first = await fetch(relay, domain, "/echo?a=b", headers={"Accept": "text/html"})
        assert first.status == 302
        login = urlsplit(first.headers["Location"])
        assert login.hostname == "localhost" and login.path == "/_relay/login"
        next_url = parse_qs(login.query)["next"][0]
        assert next_url == f"{origin}/echo?a=b"
        state = parse_qs(login.query)["state"][0]
        state_cookie = cookie_pair(first.set_cookies[0])
        assert state_cookie == f"relay_state={state}"

        form = f"token={token}&next={quote(next_url, safe='')}&state={state}".encode()
        signed_in = await fetch(
            relay,
            "localhost",
            "/_relay/login",
            method="POST",
            data=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://localhost:{relay.http_port}",
            },
        )
        assert signed_in.status == 302, signed_in.body
        hand_off = urlsplit(signed_in.headers["Location"])
        assert hand_off.hostname == domain and hand_off.path == "/_relay/sso"

        exchanged = await fetch(
            relay, domain, f"{hand_off.path}?{hand_off.query}", headers={"Cookie": state_cookie}
        )
        assert exchanged.status == 302 and exchanged.headers["Location"] == "/echo?a=b"
        cookie, cleared = exchanged.set_cookies
        assert cleared.startswith('relay_state="";') and "Max-Age=0" in cleared
        assert "Domain" not in cookie

        page = await fetch(relay, domain, "/echo?a=b", headers={"Cookie": cookie_pair(cookie)})
        assert page.status == 200 and page.json()["path"] == "/echo?a=b"
        assert page.json()["cookies"] == {}
        # The code was single-use.
        again = await fetch(relay, domain, f"{hand_off.path}?{hand_off.query}")
        assert again.status == 400
    finally:
        await tunnel.close()


async def test_nobody_else_binds_or_claims_a_verified_domain(
    relay: RelayProcess, backend: Backend, verified: tuple[str, str, str]
) -> None:
    _, _, domain = verified
    other = unique_name("oth")
    other_token = relay.add_user(other)
    tunnel = await open_tunnel(
        relay, other, f"{domain}:80:127.0.0.1:{backend.port}", token=other_token, expect_url=False
    )
    try:
        code, out, _ = await ssh_exec(relay, other, ["tunnels", "--json"], token=other_token)
        assert code == 0 and json.loads(out)["tunnels"] == []
        code, _, err = await ssh_exec(relay, other, ["domain", "add", domain], token=other_token)
        assert code == 1 and "already verified by another user" in err
        stolen = await fetch(relay, domain, "/echo", headers={"X-Relay-Token": other_token})
        assert stolen.status in (403, 502)
    finally:
        await tunnel.close()
    refused = relay_cli(relay, "domain", "add", domain, "--user", other)
    assert refused.returncode == 1 and "already verified by another user" in refused.stderr


async def test_an_unverified_domain_cannot_be_bound(relay: RelayProcess, backend: Backend) -> None:
    user = unique_name("unv")
    token = relay.add_user(user)
    domain = f"{user}.example.test"
    claim(relay, domain, user)
    tunnel = await open_tunnel(
        relay, user, f"{domain}:80:127.0.0.1:{backend.port}", token=token, expect_url=False
    )
    try:
        # The refusal arrives once the client has logged in; only then is "no tunnel" meaningful.
        assert tunnel.proc.stderr is not None
        said = ""
        while "not a verified custom domain of yours" not in said:
            line = await asyncio.wait_for(tunnel.proc.stderr.readline(), 15)
            assert line, f"ssh ended without the relay's refusal: {said!r}"
            said += line.decode()
        code, out, _ = await ssh_exec(relay, user, ["tunnels", "--json"], token=token)
        assert code == 0
        assert json.loads(out)["tunnels"] == []
        assert (await fetch(relay, domain, "/echo", headers={"X-Relay-Token": token})).status == 404
    finally:
        await tunnel.close()


async def test_self_service_over_ssh_and_removal_closes_the_tunnel(
    relay: RelayProcess, dns: RunningDns, backend: Backend
) -> None:
    user = unique_name("ssh")
    token = relay.add_user(user)
    domain = f"{user}.example.test"
    code, out, err = await ssh_exec(relay, user, ["domain", "add", domain, "--json"], token=token)
    assert code == 0, err
    name, value = challenge_of(json.loads(out))
    code, _, err = await ssh_exec(relay, user, ["domain", "verify", domain], token=token)
    assert code == 1 and "no TXT record" in err
    dns.zone.set(name, "TXT", value)
    code, out, err = await ssh_exec(relay, user, ["domain", "verify", domain], token=token)
    assert code == 0, err
    assert f"ssh -R {domain}:80:" in out
    code, out, _ = await ssh_exec(relay, user, ["domain", "list", "--json"], token=token)
    assert [(d["domain"], d["verified"]) for d in json.loads(out)["domains"]] == [(domain, True)]
    code, _, err = await ssh_exec(relay, user, ["domain", "frobnicate"], token=token)
    assert code == 2 and "usage: domain add" in err

    tunnel = await open_tunnel(relay, user, f"{domain}:80:127.0.0.1:{backend.port}", token=token)
    try:
        assert (await fetch(relay, domain, "/echo", headers={"X-Relay-Token": token})).status == 200
        code, _, err = await ssh_exec(relay, user, ["domain", "remove", domain], token=token)
        assert code == 0, err
        assert await ask(relay, domain) == 404
        # The running relay re-checks every 10 s and closes the tunnel on the removed domain.
        status = 200
        for _ in range(60):
            status = (await fetch(relay, domain, "/echo", headers={"X-Relay-Token": token})).status
            if status == 404:
                break
            await asyncio.sleep(0.5)
        assert status == 404
    finally:
        await tunnel.close()


async def test_tls_ask_says_yes_only_for_hosts_the_relay_serves(
    relay: RelayProcess, dns: RunningDns, verified: tuple[str, str, str]
) -> None:
    user, _, domain = verified
    assert await ask(relay, "localhost") == 200
    assert await ask(relay, f"{user}.localhost") == 200  # every user owns their name
    assert await ask(relay, domain) == 200
    assert await ask(relay, "nobody-owns-this.localhost") == 404
    assert await ask(relay, "a.b.localhost") == 404
    assert await ask(relay, "example.test") == 404
    assert await ask(relay, "evil.example.com") == 404
    assert await ask(relay, f"{domain}:443") == 404
    assert await ask(relay, "") == 400
    # Caddy calls it at the relay's own address or host; on a tunnel host the path is not the ask.
    assert await ask(relay, domain, ask_host="localhost") == 200
    assert await ask(relay, domain, ask_host=f"{user}.localhost") == 404  # a relay path, not the ask


# -- the relay's own TLS with per-domain certificates by SNI ----------------------------------------


def _served_names(der: bytes) -> set[str]:
    cert = x509.load_der_x509_certificate(der)
    return set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    )


async def _peer_names(port: int, server_name: str) -> set[str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we only read which certificate was chosen
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return _served_names(der)
    finally:
        writer.close()


async def test_own_tls_picks_certificates_by_sni_and_plain_http_redirects(
    workdir: Path, dns: RunningDns, backend: Backend
) -> None:
    default_dir, domain_dir = workdir / "default", workdir / "tls" / "lab.example.test"
    default_dir.mkdir()
    domain_dir.mkdir(parents=True)
    user = unique_name("sni")
    cert, key = self_signed(default_dir, ["localhost", f"{user}.localhost"])
    d_cert, d_key = self_signed(domain_dir, ["lab.example.test"])
    d_cert.rename(domain_dir / "fullchain.pem")
    d_key.rename(domain_dir / "privkey.pem")
    relay = start_relay(
        workdir,
        extra=[
            "--https-port", "0", "--tls-cert", str(cert), "--tls-key", str(key),
            "--tls-dir", str(workdir / "tls"), "--dns-server", dns.address,
        ],
    )  # fmt: skip
    tunnel: SshTunnel | None = None
    try:
        https_port = int(
            next(x for x in relay.output if "HTTPS on" in x)
            .split("HTTPS on ")[1]
            .split(",")[0]
            .rsplit(":")[1]
        )
        token = relay.add_user(user)
        name, value = challenge_of(claim(relay, "lab.example.test", user))
        dns.zone.set(name, "TXT", value)
        assert verify(relay, dns, "lab.example.test").returncode == 0

        assert await _peer_names(https_port, "lab.example.test") == {"lab.example.test"}
        assert await _peer_names(https_port, f"{user}.localhost") == {"localhost", f"{user}.localhost"}
        assert await _peer_names(https_port, "unknown.example.test") == {"localhost", f"{user}.localhost"}

        # A renewed certificate is served without a restart.
        renewed = workdir / "renewed"
        renewed.mkdir()
        r_cert, r_key = self_signed(renewed, ["lab.example.test", "www.lab.example.test"])
        shutil.copyfile(r_key, domain_dir / "privkey.pem")
        shutil.copyfile(r_cert, domain_dir / "fullchain.pem")
        assert await _peer_names(https_port, "lab.example.test") == {
            "lab.example.test",
            "www.lab.example.test",
        }

        tunnel = await open_tunnel(relay, user, f"lab.example.test:80:127.0.0.1:{backend.port}", token=token)
        assert tunnel.stdout_lines == [f"https://lab.example.test:{https_port}"]
        before = len(backend.seen)
        plain = await fetch(relay, "lab.example.test", f"/echo?relay_token={token}&keep=1")
        assert plain.status == 308
        assert plain.headers["Location"] == f"https://lab.example.test:{https_port}/echo?keep=1"
        assert plain.set_cookies == []
        assert len(backend.seen) == before
        assert (await fetch(relay, "nowhere.example.test", "/")).status == 404
        assert (await fetch(relay, "127.0.0.1", "/_relay/health")).status == 200  # health checks stay plain
        assert (await ask(relay, "lab.example.test")) == 200  # and so does Caddy's ask

        context = ssl.create_default_context(cafile=str(renewed / "cert.pem"))
        connector = aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver())
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
            origin = f"https://lab.example.test:{https_port}"
            async with session.get(f"{origin}/echo?relay_token={token}", allow_redirects=False) as resp:
                assert resp.status == 303
                [cookie] = resp.headers.getall("Set-Cookie")
                assert cookie.startswith("__Host-relay_session=") and "Secure" in cookie
            async with session.get(f"{origin}/echo", headers={"Cookie": cookie_pair(cookie)}) as resp:
                assert resp.status == 200
                assert (await resp.json())["headers"]["X-Forwarded-Proto"] == "https"
    finally:
        if tunnel is not None:
            await tunnel.close()
        relay.stop()


async def test_relay_client_binds_a_verified_domain(
    relay: RelayProcess, backend: Backend, verified: tuple[str, str, str], workdir: Path
) -> None:
    user, token, domain = verified
    client = await start_client(
        relay,
        workdir / "client-home",
        ["--user", user, "--token", token, "--domain", domain, "--port", str(backend.port)],
    )
    try:
        assert client.url == f"http://{domain}:{relay.http_port}"
        reply = await fetch(relay, domain, "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200 and reply.json()["path"] == "/echo"
    finally:
        assert await client.stop() == 0
