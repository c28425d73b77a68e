"""Visitor auth through a real relay, a real OpenSSH ``ssh -R`` and a real backend (DESIGN §3.3)."""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp

from .conftest import Owned, unique_name
from .harness import Backend, RelayProcess, cookie_pair, fetch, raw_request, sign_in

HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_no_credential_is_refused_and_backend_sees_nothing(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    api = await fetch(relay, owned.host, "/echo")
    assert api.status == 401
    assert api.json()["login"].startswith(f"http://localhost:{relay.http_port}/_relay/login?next=")
    browser = await fetch(relay, owned.host, "/lab?x=1", headers=HTML)
    assert browser.status == 302
    location = browser.headers["Location"]
    state = cookie_pair(browser.set_cookies[0]).removeprefix("relay_state=")
    assert location == (
        f"http://localhost:{relay.http_port}/_relay/login?next="
        + quote(f"{owned.url}/lab?x=1", safe="")
        + f"&state={state}"
    )
    assert "HttpOnly" in browser.set_cookies[0] and "SameSite=Lax" in browser.set_cookies[0]
    for method in ("HEAD", "OPTIONS", "POST", "DELETE"):
        reply = await fetch(
            relay, owned.host, "/echo", method=method, data=b"x" if method == "POST" else None
        )
        assert reply.status == 401, method
    upgrade = await fetch(
        relay,
        owned.host,
        "/ws",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert upgrade.status == 401
    assert backend.seen == []


async def test_wrong_token_and_other_users_token(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    other = relay.add_user("mallory1")
    reply = await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": other})
    assert reply.status == 403
    bad = await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token[:-2] + "xx"})
    assert bad.status == 401
    query = await fetch(relay, owned.host, f"/echo?relay_token={other}")
    assert query.status == 403
    assert backend.seen == []


async def test_header_token_reaches_backend_without_relay_credentials(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    reply = await fetch(
        relay,
        owned.host,
        "/echo?a=1",
        headers={
            "X-Relay-Token": owned.token,
            "Cookie": "relay_session=abc; app=1; __Host-relay_session=def",
            "Authorization": "token jupyter-secret",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil",
            "X-Forwarded-Proto": "https",
        },
    )
    assert reply.status == 200
    seen = reply.json()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert "x-relay-token" not in headers
    assert seen["cookies"] == {"app": "1"}
    assert headers["authorization"] == "token jupyter-secret"  # Jupyter's own auth is untouched
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"{owned.host}"
    assert owned.token not in str(seen)
    assert len(backend.seen) == 1


async def test_query_token_becomes_cookie(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    reply = await fetch(relay, owned.host, f"/echo?a=1&relay_token={owned.token}&b=2")
    assert reply.status == 303
    assert reply.headers["Location"] == f"{owned.url}/echo?a=1&b=2"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    [cookie] = reply.set_cookies
    assert cookie.startswith("relay_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Domain" not in cookie and owned.token not in cookie
    assert backend.seen == []  # the token URL itself never reaches the backend
    ok = await fetch(relay, owned.host, "/echo?a=1&b=2", headers={"Cookie": cookie_pair(cookie)})
    assert ok.status == 200
    assert ok.json()["cookies"] == {}
    assert "relay_token" not in str(backend.seen)
    # The host-only session is not valid on another tunnel host.
    other = await fetch(relay, "nobody.localhost", "/", headers={"Cookie": cookie_pair(cookie)})
    assert other.status in (404, 502)


async def test_login_form_and_sso_hand_off(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    first = await fetch(relay, owned.host, "/lab/tree?x=1", headers=HTML)
    login_url = urlsplit(first.headers["Location"])
    assert login_url.hostname == "localhost"
    form = await fetch(relay, "localhost", f"{login_url.path}?{login_url.query}", headers=HTML)
    assert form.status == 200
    assert b'name="token"' in form.body or b"name=token" in form.body
    next_value = parse_qs(login_url.query)["next"][0]
    state = parse_qs(login_url.query)["state"][0]
    state_cookie = cookie_pair(first.set_cookies[0])
    assert state_cookie == f"relay_state={state}" and f'name=state value="{state}"'.encode() in form.body
    wrong = await fetch(
        relay,
        "localhost",
        "/_relay/login",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=f"token=rly_0000000000_nope&next={quote(next_value)}".encode(),
    )
    assert wrong.status == 401 and b"not valid" in wrong.body
    posted = await fetch(
        relay,
        "localhost",
        "/_relay/login",
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"http://localhost:{relay.http_port}",
        },
        data=f"token={quote(owned.token)}&next={quote(next_value)}&state={state}".encode(),
    )
    assert posted.status == 302
    relay_cookie = cookie_pair(posted.set_cookies[0])
    hand_off = urlsplit(posted.headers["Location"])
    assert hand_off.hostname == owned.host and hand_off.path == "/_relay/sso"
    sso = await fetch(
        relay, owned.host, f"{hand_off.path}?{hand_off.query}", headers={"Cookie": state_cookie}
    )
    assert sso.status == 302
    assert sso.headers["Location"] == "/lab/tree?x=1"
    host_cookie = cookie_pair(sso.set_cookies[0])
    assert host_cookie != relay_cookie
    page = await fetch(relay, owned.host, "/lab/tree?x=1", headers={"Cookie": host_cookie})
    assert page.status == 200
    # The code is single-use.
    again = await fetch(
        relay, owned.host, f"{hand_off.path}?{hand_off.query}", headers={"Cookie": state_cookie}
    )
    assert again.status == 400
    # Single sign-on: with the relay session, the login page hands off at once, without the form.
    second = await fetch(
        relay, "localhost", f"{login_url.path}?{login_url.query}", headers={"Cookie": relay_cookie, **HTML}
    )
    assert second.status == 302 and "/_relay/sso?code=" in second.headers["Location"]


async def test_login_refuses_foreign_next(relay: RelayProcess, owned: Owned) -> None:
    for bad in (
        "http://evil.com/",
        f"http://localhost:{relay.http_port}/",
        "javascript:alert(1)",
        f"http://{owned.host}.evil.com:{relay.http_port}/",
        f"http://x@{owned.host}:{relay.http_port}/",
    ):
        posted = await fetch(
            relay,
            "localhost",
            "/_relay/login",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            data=f"token={quote(owned.token)}&next={quote(bad)}".encode(),
        )
        assert posted.status == 303, bad
        assert posted.headers["Location"] == f"http://localhost:{relay.http_port}/", bad


async def test_backend_cannot_set_relay_cookies(relay: RelayProcess, owned: Owned) -> None:
    reply = await fetch(relay, owned.host, "/set-cookies", headers={"X-Relay-Token": owned.token})
    assert reply.status == 200
    assert reply.set_cookies == ["app=1; Path=/"]


async def test_websocket_echo_and_foreign_origin(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    headers = {"Host": owned.host, "X-Relay-Token": owned.token}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{relay.base}/ws", headers={**headers, "Origin": owned.url}) as ws:
            for i in range(20):
                await ws.send_str(f"m{i}")
                assert (await ws.receive_str()) == f"echo:m{i}"
            blob = bytes(range(256)) * 1000
            await ws.send_bytes(blob)
            assert (await ws.receive_bytes()) == blob
        before = len(backend.seen)
        for origin in (f"http://evil.localhost:{relay.http_port}", "https://example.com"):
            try:
                async with session.ws_connect(f"{relay.base}/ws", headers={**headers, "Origin": origin}):
                    raise AssertionError("cross-origin upgrade was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 403
        assert len(backend.seen) == before


async def test_unsafe_method_from_foreign_origin(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    reply = await fetch(
        relay,
        owned.host,
        "/echo",
        method="POST",
        data=b"x",
        headers={"X-Relay-Token": owned.token, "Origin": "http://other.localhost"},
    )
    assert reply.status == 403
    same = await fetch(
        relay,
        owned.host,
        "/echo",
        method="POST",
        data=b"x",
        headers={"X-Relay-Token": owned.token, "Origin": owned.url},
    )
    assert same.status == 200 and same.json()["body"] == "x"
    assert len(backend.seen) == 1


async def test_malformed_requests(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    no_host = await raw_request(relay.http_port, b"GET / HTTP/1.1\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.1 400")
    mismatch = await raw_request(
        relay.http_port,
        (
            f"GET http://other.localhost/echo HTTP/1.1\r\nHost: {owned.host}\r\n"
            f"X-Relay-Token: {owned.token}\r\n\r\n"
        ).encode(),
    )
    assert mismatch.startswith(b"HTTP/1.1 400")
    smuggle = await raw_request(
        relay.http_port,
        (
            f"POST /echo HTTP/1.1\r\nHost: {owned.host}\r\nX-Relay-Token: {owned.token}\r\n"
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ).encode(),
    )
    assert smuggle.startswith(b"HTTP/1.1 400")
    assert backend.seen == []
    unknown = await fetch(relay, "nosuchname.localhost", "/")
    assert unknown.status == 404


async def test_keep_alive_reuses_connection_and_checks_every_request(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    good = (f"GET /echo HTTP/1.1\r\nHost: {owned.host}\r\nX-Relay-Token: {owned.token}\r\n\r\n").encode()
    bad = (f"GET /echo?second HTTP/1.1\r\nHost: {owned.host}\r\n\r\n").encode()
    out = await raw_request(relay.http_port, good + good + bad + good, read_timeout=3)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", out)
    assert statuses == [b"200", b"200", b"401", b"200"]
    assert [s["path"] for s in backend.seen] == ["/echo", "/echo", "/echo"]


async def test_query_token_variants_never_reach_the_backend(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    encoded = await fetch(relay, owned.host, f"/echo?relay%5Ftoken={owned.token}")
    assert encoded.status == 303 and encoded.headers["Location"] == f"{owned.url}/echo"
    posted = await fetch(relay, owned.host, f"/echo?relay_token={owned.token}", method="POST", data=b"x")
    assert posted.status == 401
    assert backend.seen == []


async def test_websocket_both_directions_at_once(relay: RelayProcess, owned: Owned) -> None:
    """Many frames in flight both ways: nothing lost or reordered by the relay's pipe."""
    headers = {"Host": owned.host, "X-Relay-Token": owned.token, "Origin": owned.url}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{relay.base}/ws", headers=headers) as ws:
            for i in range(500):
                await ws.send_str(f"n{i}" + "x" * (i % 300))
            for i in range(500):
                assert await ws.receive_str(timeout=10) == f"echo:n{i}" + "x" * (i % 300)


async def test_long_query_strings_pass_through(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    query = "&".join(f"k{i}=v{i}" for i in range(300))
    reply = await fetch(relay, owned.host, f"/echo?{query}", headers={"X-Relay-Token": owned.token})
    assert reply.status == 200
    assert reply.json()["path"] == f"/echo?{query}"


def _sessions(relay: RelayProcess) -> int:
    with contextlib.closing(relay.store()) as store:
        return store.count_sessions()


async def test_crafted_targets_and_redirects_get_400_or_a_safe_answer_never_a_traceback(
    relay: RelayProcess, owned: Owned
) -> None:
    """Absolute-form targets with broken IPv6 literals, percent-encoded and non-ASCII ``next``
    values: a 400 (or the value ignored), one log line each, no traceback, no stray session."""
    mark = f"crafted{relay.http_port}"
    login = "/_relay/login?next="
    cases = [  # (target, Host, status)
        (f"http://[::1/{mark}/a", "[::1]", 400),
        (f"http://[1::2::3]/{mark}/b", "[1::2::3]", 400),
        (f"http://[fe80::1%25lo]/{mark}/c", owned.host, 400),
        (f"{login}http%3A%2F%2F%5B%3A%3A1%2F&m={mark}/d", "localhost", 200),
        (f"{login}http%3A%2F%2F{owned.host}%2F%C3%A9&m={mark}/e", "localhost", 200),
        (f"/_relay/sso?code=nope&next=%2F%C3%A9%E2%80%AE&m={mark}/f", owned.host, 400),
    ]
    before = _sessions(relay)
    for target, host, status in cases:
        head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        out = await raw_request(relay.http_port, head.encode())
        assert out.startswith(f"HTTP/1.1 {status} ".encode()), (target, out[:200])
    assert _sessions(relay) == before
    # A real hand-off code, redeemed with a non-ASCII next: the Location is percent-encoded.
    state_cookie, code, _ = await sign_in(relay, owned.host, owned.token)
    sso = await fetch(
        relay,
        owned.host,
        f"/_relay/sso?code={code}&next=%2F%C3%A9%E2%80%AE",
        headers={"Cookie": state_cookie},
    )
    assert sso.status == 302 and sso.headers["Location"] == "/%C3%A9%E2%80%AE"
    text = relay.log_text()
    assert "Traceback" not in text and "request failed" not in text
    assert sum(mark in line for line in text.splitlines()) <= len(cases)


async def test_a_hand_off_code_works_only_in_the_browser_that_started_it(
    relay: RelayProcess, owned: Owned
) -> None:
    """Login CSRF: an attacker's code pushed into a victim's browser must not sign the victim in."""
    mine, code, _ = await sign_in(relay, owned.host, owned.token)
    theirs, _, _ = await sign_in(relay, owned.host, owned.token)  # another browser, its own state
    assert mine != theirs
    for cookie in ({}, {"Cookie": theirs}):
        elsewhere = await fetch(relay, owned.host, f"/_relay/sso?code={code}&next=%2F", headers=cookie)
        assert elsewhere.status == 400 and not any("relay_session=" in c for c in elsewhere.set_cookies)
    # The code was spent by those tries; a fresh one redeems in its own browser.
    mine, code, _ = await sign_in(relay, owned.host, owned.token)
    ok = await fetch(relay, owned.host, f"/_relay/sso?code={code}&next=%2F", headers={"Cookie": mine})
    assert ok.status == 302 and any(c.startswith("relay_session=") for c in ok.set_cookies)


async def test_no_code_is_minted_for_a_host_the_user_may_not_visit(relay: RelayProcess, owned: Owned) -> None:
    stranger = unique_name("str")
    token = relay.add_user(stranger)
    _, code, posted = await sign_in(relay, owned.host, token)
    assert posted.status == 403 and code == ""
    assert f"signed in as {stranger}".encode() in posted.body and b"name=token" in posted.body
    assert not posted.set_cookies  # nothing made for a sign-in that goes nowhere


async def test_a_refused_visitor_is_offered_to_sign_in_as_someone_else(
    relay: RelayProcess, owned: Owned
) -> None:
    stranger = unique_name("str")
    token = relay.add_user(stranger)
    refused = await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token, **HTML})
    assert refused.status == 403 and b"Sign in as someone else" in refused.body
    link = re.search(rb'href="([^"]+)"', refused.body)
    assert link is not None and b"/_relay/login?next=" in link[1] and b"&amp;state=" in link[1]
    via_query = await fetch(relay, owned.host, f"/echo?relay_token={token}", headers=HTML)
    assert via_query.status == 403 and b"Sign in as someone else" in via_query.body


async def test_site_wide_response_headers_never_reach_the_visitor(relay: RelayProcess, owned: Owned) -> None:
    reply = await fetch(relay, owned.host, "/site-wide", headers={"X-Relay-Token": owned.token})
    assert reply.status == 200 and reply.body == b"ok"
    assert "Clear-Site-Data" not in reply.headers and reply.headers.get("X-Kept") == "1"
