"""The dashboard (issue 13) against a real relay and real OpenSSH clients, over plain HTTP: what it
shows, that every change needs the session's CSRF token, the relay's own Origin and a host of the
caller's, that the event stream follows requests and refuses foreign origins and ends with the
session, and that a request path holding HTML is shown escaped."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from .conftest import Owned, unique_name
from .harness import (
    Backend,
    CookieBrowser,
    RelayProcess,
    cookie_pair,
    fetch,
    open_tunnel,
    raw_request,
    ssh_exec,
    start_relay,
)

FORM = "application/x-www-form-urlencoded"


async def sign_in_relay(relay: RelayProcess, token: str) -> str:
    """A relay-host session cookie (``name=value``) for ``token``'s user."""
    reply = await fetch(
        relay, "localhost", "/_relay/login", method="POST",
        headers={"Content-Type": FORM}, data=f"token={token}".encode(),
    )  # fmt: skip
    assert reply.status == 303, reply.body
    return cookie_pair(reply.set_cookies[0])


async def page(relay: RelayProcess, cookie: str, path: str = "/") -> tuple[int, str, dict[str, str]]:
    reply = await fetch(relay, "localhost", path, headers={"Cookie": cookie, "Accept": "text/html"})
    return reply.status, reply.body.decode(), reply.headers


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html[:500]
    return found[1]


async def post(
    relay: RelayProcess, cookie: str, action: str, form: dict[str, str], *, origin: str | None = None
) -> tuple[int, str, dict[str, str]]:
    headers = {"Cookie": cookie, "Content-Type": FORM, "Accept": "text/html"}
    headers["Origin"] = origin if origin is not None else f"http://localhost:{relay.http_port}"
    reply = await fetch(
        relay, "localhost", f"/_relay/dashboard/{action}", method="POST", headers=headers,
        data=urlencode(form).encode(),
    )  # fmt: skip
    return reply.status, reply.body.decode(), reply.headers


async def test_the_dashboard_shows_tunnels_strictly(relay: RelayProcess, owned: Owned) -> None:
    cookie = await sign_in_relay(relay, owned.token)
    status, html, headers = await page(relay, cookie)
    assert (
        status == 200
        and owned.url in html
        and "live" in html
        and f"Signed in as <strong>{owned.name}" in html
    )
    assert headers["Cache-Control"] == "no-store"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "https://" not in html.replace(owned.url, "")  # no external assets
    status, anonymous, _ = await page(relay, "")
    assert status == 200 and "Sign in" in anonymous and owned.url not in anonymous
    # The front's identity headers cannot be sent by a visitor.
    forged = await fetch(
        relay, "localhost", "/", headers={"X-Relay-Dashboard-User": "1", "Accept": "text/html"}
    )
    assert forged.status == 200 and b"Signed in as" not in forged.body


async def test_changes_need_the_csrf_token_the_origin_and_an_own_host(
    relay: RelayProcess, owned: Owned, backend: Backend
) -> None:
    alice = owned
    bob = unique_name("bob")
    bob_token = relay.add_user(bob)
    bob_tunnel = await open_tunnel(relay, bob, f"{bob}:80:127.0.0.1:{backend.port}", token=bob_token)
    try:
        cookie = await sign_in_relay(relay, alice.token)
        csrf = csrf_of((await page(relay, cookie))[1])
        other_cookie = await sign_in_relay(relay, bob_token)
        other_csrf = csrf_of((await page(relay, other_cookie))[1])
        assert other_csrf != csrf
        share = {"host": alice.host, "with": bob}
        assert (await post(relay, cookie, "share", share))[0] == 403  # no token
        assert (await post(relay, cookie, "share", {**share, "csrf": "0" * 64}))[0] == 403
        assert (await post(relay, cookie, "share", {**share, "csrf": other_csrf}))[
            0
        ] == 403  # bob's session's
        cross = await post(relay, cookie, "share", {**share, "csrf": csrf}, origin="http://evil.example")
        assert cross[0] == 403
        foreign = await post(
            relay, cookie, "share", {"host": f"{bob}.localhost", "with": alice.name, "csrf": csrf}
        )
        assert foreign[0] == 403 and "not yours" in foreign[1]
        code, out, _ = await ssh_exec(relay, bob, ["share", "list", "--json"], token=bob_token)
        assert code == 0 and json.loads(out) == {"shares": []}  # nothing changed
        foreign_revoke = await post(relay, cookie, "token-revoke", {"id": "rly_0000000000", "csrf": csrf})
        assert foreign_revoke[0] == 403
        assert (
            "share"
            not in (await page(relay, cookie, f"/_relay/dashboard/tunnel?host={bob}.localhost"))[1][:0]
        )
        assert (await page(relay, cookie, f"/_relay/dashboard/tunnel?host={bob}.localhost"))[0] == 403
        # The same request, right: shared, and it shows on bob's dashboard.
        done = await post(relay, cookie, "share", {**share, "csrf": csrf})
        assert done[0] == 303, done[1]
        assert f"shared by {alice.name}" in (await page(relay, other_cookie))[1]
        # No state changes on GET.
        assert (await page(relay, cookie, f"/_relay/dashboard/share?host={alice.host}&with={bob}"))[0] in (
            404,
            405,
        )
    finally:
        await bob_tunnel.close()


async def test_tokens_and_links_are_made_and_revoked_here(relay: RelayProcess, owned: Owned) -> None:
    cookie = await sign_in_relay(relay, owned.token)
    csrf = csrf_of((await page(relay, cookie))[1])
    status, html, _ = await post(relay, cookie, "token", {"label": "colab", "csrf": csrf})
    assert status == 200 and "shown only now" in html
    token = re.search(r"(rly_[0-9a-f]{10}_[A-Za-z0-9_\-]+)", html)
    assert token
    connect = f"relay://{owned.name}:{token[1]}@localhost:{relay.ssh_port}#{relay.fingerprint}"
    assert connect in html  # the one secret, beside the token
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token[1]})).status == 200
    token_id = token[1][: len("rly_") + 10]
    assert token_id in (await page(relay, cookie))[1] and token[1] not in (await page(relay, cookie))[1]
    assert (await post(relay, cookie, "token-revoke", {"id": token_id, "csrf": csrf}))[0] == 303
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token[1]})).status == 401
    status, html, _ = await post(relay, cookie, "link", {"host": owned.host, "label": "ta", "csrf": csrf})
    url = re.search(r"(http://localhost:\d+/_relay/share/[A-Za-z0-9_\-]+)", html)
    assert status == 200 and url and "Copy" in html
    assert (await CookieBrowser(relay).get(url[1])).status == 200
    status, tunnel_page, _ = await page(relay, cookie, f"/_relay/dashboard/tunnel?host={owned.host}")
    assert status == 200 and "link:ta" in tunnel_page and url[1] not in tunnel_page


async def test_the_event_stream_follows_refuses_foreign_origins_and_ends_with_the_session(
    relay: RelayProcess, owned: Owned
) -> None:
    cookie = await sign_in_relay(relay, owned.token)
    events = f"/_relay/dashboard/events?host={owned.host}"
    for bad in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert (await fetch(relay, "localhost", events, headers={"Cookie": cookie, **bad})).status == 403
    assert (await fetch(relay, "localhost", events)).status == 401  # no session
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{relay.base}{events}", headers={"Host": "localhost", "Cookie": cookie}
        ) as stream:
            assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
            await fetch(relay, owned.host, "/echo?seen=1", headers={"X-Relay-Token": owned.token})
            data = await asyncio.wait_for(_next_event(stream), 10)
            assert data["path"] == "/echo?seen=1" and data["status"] == 200 and data["visitor"] == owned.name
            logout = await fetch(
                relay, "localhost", "/_relay/logout", method="POST",
                headers={"Cookie": cookie, "Origin": f"http://localhost:{relay.http_port}"},
            )  # fmt: skip
            assert logout.status == 303
            started = time.monotonic()
            await asyncio.wait_for(_until_closed(stream), 10)  # the session ended: so does the stream
            assert time.monotonic() - started < 10


async def _next_event(stream: aiohttp.ClientResponse) -> dict[str, object]:
    async for raw in stream.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            doc: dict[str, object] = json.loads(line[len("data: ") :])
            return doc
    raise AssertionError("the stream ended")


async def _until_closed(stream: aiohttp.ClientResponse) -> None:
    async for _ in stream.content:
        pass


async def test_a_path_with_html_is_shown_escaped(relay: RelayProcess, owned: Owned) -> None:
    request = (
        f"GET /echo/<script>alert(1)</script>?x=<b> HTTP/1.1\r\nHost: {owned.host}\r\n"
        f"X-Relay-Token: {owned.token}\r\nConnection: close\r\n\r\n"
    ).encode()
    assert b" 200 " in (await raw_request(relay.http_port, request))[:20]
    cookie = await sign_in_relay(relay, owned.token)
    _, html, _ = await page(relay, cookie, f"/_relay/dashboard/tunnel?host={owned.host}")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_an_admin_sees_every_tunnel_and_closes_one(relay: RelayProcess, owned: Owned) -> None:
    admin = await sign_in_relay(relay, relay.admin_token)
    status, html, _ = await page(relay, admin)
    assert status == 200 and "All live tunnels" in html and owned.host in html
    user = await sign_in_relay(relay, owned.token)
    user_csrf = csrf_of((await page(relay, user))[1])
    assert "All live tunnels" not in (await page(relay, user))[1]
    assert (await post(relay, user, "close", {"host": owned.host, "csrf": user_csrf}))[0] == 403
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token})).status == 200
    assert (await post(relay, admin, "close", {"host": owned.host, "csrf": csrf_of(html)}))[0] == 303
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token})).status == 502


async def test_a_thousand_tunnels_render(relay: RelayProcess) -> None:
    name = unique_name("many")
    token = relay.add_user(name)
    store = relay.store()
    user = store.get_user(name)
    for n in range(1000):
        store.claim_name(f"{name}x{n}", user.id)
    store.close()
    cookie = await sign_in_relay(relay, token)
    started = time.monotonic()
    status, html, _ = await page(relay, cookie)
    took = time.monotonic() - started
    assert status == 200 and html.count("offline") >= 1000
    print(f"a dashboard of 1,000 tunnels rendered in {took * 1000:.0f} ms")


async def test_an_open_event_stream_does_not_hold_up_shutdown(workdir: Path, backend: Backend) -> None:
    own = start_relay(workdir)
    try:
        name = unique_name("sse")
        token = own.add_user(name)
        tunnel = await open_tunnel(own, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
        cookie = await sign_in_relay(own, token)
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{own.base}/_relay/dashboard/events?host={name}.localhost",
                headers={"Host": "localhost", "Cookie": cookie},
            ) as stream:
                assert stream.status == 200
                started = time.monotonic()
                code = await asyncio.to_thread(own.stop)
                assert code == 0 and time.monotonic() - started < 10  # not the 30 s shutdown grace
        await tunnel.close()
    finally:
        if own.proc.poll() is None:
            own.stop()
