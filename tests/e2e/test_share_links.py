"""Share links (issue 12), against a real relay and real OpenSSH clients: the owner makes a link over
SSH; a fresh browser opens it and gets a guest session for that one host, WebSockets included; the
code never reaches the tunnel host, the backend or a log; revoke and expiry end the guest at the
next request and close an open WebSocket within seconds; used-up, expired and forged links get the
relay's 410 page, never the app. Bad input gets one clear line and changes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from .conftest import Owned, unique_name
from .harness import Backend, CookieBrowser, RelayProcess, limit_args, open_tunnel, ssh_exec, start_relay

MAX_GUESTS = 2


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """This module's relay: few guests per link, and open WebSockets re-checked every second."""
    workdir = tmp_path_factory.mktemp("relay")
    workdir.chmod(0o700)
    limits = {"share_max_guests_per_link": str(MAX_GUESTS), "share_recheck_interval": "1"}
    proc = start_relay(workdir, extra=limit_args(limits))
    yield proc
    proc.stop()


async def make_link(relay: RelayProcess, owner: Owned, *args: str) -> dict[str, object]:
    code, out, err = await ssh_exec(
        relay, owner.name, ["share", "link", owner.name, *args, "--json"], token=owner.token
    )
    assert code == 0, err
    doc: dict[str, object] = json.loads(out)
    return doc


def code_of(url: object) -> str:
    return str(url).rsplit("/", 1)[1]


async def test_a_guest_opens_a_link_and_uses_the_app(
    relay: RelayProcess, owned: Owned, backend: Backend
) -> None:
    link = await make_link(relay, owned, "--label", "ta", "--expires", "1h")
    url, code = str(link["url"]), code_of(link["url"])
    assert url.startswith(f"http://localhost:{relay.http_port}/_relay/share/") and len(code) >= 22
    assert link["kind"] == "link" and link["label"] == "ta" and link["host"] == owned.host

    guest = CookieBrowser(relay)
    landed = await guest.get(url)
    first = guest.visited[0][1]
    assert first.status == 302 and first.headers["Referrer-Policy"] == "no-referrer"
    assert urlsplit(first.headers["Location"]).hostname == owned.host
    for hop_url, hop in guest.visited[1:]:  # the code stays on the relay host
        assert code not in hop_url or urlsplit(hop_url).hostname == "localhost"
        assert code not in hop.headers.get("Location", "")
    assert landed.status == 200 and guest.visited[-1][0] == owned.url + "/"
    echo = await guest.get(owned.url + "/echo")
    assert echo.status == 200 and echo.json()["cookies"] == {}  # no relay cookie reaches the app

    # A WebSocket as the guest; the guest cookie is worth nothing on another host or the relay's.
    jar = guest.cookies(owned.host)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{relay.base}/ws", headers={"Host": owned.host, "Cookie": jar, "Origin": owned.url}
        ) as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
    other = unique_name("oth")
    tunnel = await open_tunnel(relay, owned.name, f"{other}:80:127.0.0.1:{backend.port}", token=owned.token)
    try:
        replayed = await guest.get(relay.url(other) + "/echo", headers={"Cookie": jar})
        assert replayed.status != 200 and b"echo" not in replayed.body
    finally:
        await tunnel.close()
    home = await guest.get(f"http://localhost:{relay.http_port}/", headers={"Cookie": jar})
    assert b"Signed in" not in home.body

    # Nothing of the code anywhere but the relay host: not the backend, not the log.
    assert not any(code in json.dumps(seen) for seen in backend.seen)
    assert code not in relay.log_text() and "path=/_relay/share/CODE " in relay.log_text()

    # Listed with one use; revoked by its owner, the guest is refused at the next request.
    code_, out, _ = await ssh_exec(relay, owned.name, ["share", "list", "--json"], token=owned.token)
    [listed] = [s for s in json.loads(out)["shares"] if s["id"] == link["id"]]
    assert listed["kind"] == "link" and listed["uses"] == 1 and listed["label"] == "ta"
    code_, _, err = await ssh_exec(relay, owned.name, ["share", "revoke", str(link["id"])], token=owned.token)
    assert code_ == 0, err
    after = await guest.get(owned.url + "/echo")
    assert after.status == 410 and b"no longer valid" in after.body
    again = await CookieBrowser(relay).get(url)
    assert again.status == 410 and again.headers["Referrer-Policy"] == "no-referrer"


async def test_revoke_closes_an_open_websocket(relay: RelayProcess, owned: Owned) -> None:
    link = await make_link(relay, owned)
    guest = CookieBrowser(relay)
    assert (await guest.get(str(link["url"]))).status == 200
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{relay.base}/ws",
            headers={"Host": owned.host, "Cookie": guest.cookies(owned.host), "Origin": owned.url},
        ) as ws:
            await ws.send_str("before")
            assert (await ws.receive(timeout=5)).data == "echo:before"
            code, _, err = await ssh_exec(
                relay, owned.name, ["share", "revoke", str(link["id"])], token=owned.token
            )
            assert code == 0, err
            revoked = time.monotonic()
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert time.monotonic() - revoked < 10


async def test_an_expired_link_ends_its_guests(relay: RelayProcess, owned: Owned) -> None:
    link = await make_link(relay, owned, "--expires", "3s")
    guest = CookieBrowser(relay)
    assert (await guest.get(str(link["url"]))).status == 200
    assert (await guest.get(owned.url + "/echo")).status == 200
    await asyncio.sleep(3.2)
    ended = await guest.get(owned.url + "/echo")
    assert ended.status == 410 and b"no longer valid" in ended.body
    assert (await CookieBrowser(relay).get(str(link["url"]))).status == 410


async def test_forged_and_used_up_links_get_the_410_page(relay: RelayProcess, owned: Owned) -> None:
    forged = await CookieBrowser(relay).get(f"http://localhost:{relay.http_port}/_relay/share/notacode")
    assert forged.status == 410 and b"no longer valid" in forged.body
    link = await make_link(relay, owned)
    for _ in range(MAX_GUESTS):
        assert (await CookieBrowser(relay).get(str(link["url"]))).status == 200
    used_up = await CookieBrowser(relay).get(str(link["url"]))
    assert used_up.status == 410 and b"used up" in used_up.body
    # A continuation without the link's cookie (another browser) is refused too.
    stray = await CookieBrowser(relay).get(
        f"http://localhost:{relay.http_port}/_relay/share?host={owned.host}&state=abcdefghijklmnopqrstuv"
    )
    assert stray.status == 410


async def test_bad_link_commands_say_what_is_wrong_and_change_nothing(
    relay: RelayProcess, owned: Owned
) -> None:
    other = unique_name("oth")
    other_token = relay.add_user(other)
    cases = [
        (owned, ["share", "link", owned.name, "--expires", "31d"], 1, "longer than"),
        (owned, ["share", "link", owned.name, "--expires", "5x"], 1, "invalid duration"),
        (owned, ["share", "link", owned.name, "--label", "x" * 41], 1, "label"),
        (owned, ["share", "link", "nobodys"], 1, "not owned"),
        (owned, ["share", "link"], 2, "usage: share"),
        (owned, ["share", "link", owned.name, "--with", other], 2, "usage: share"),
    ]
    for who, argv, status, text in cases:
        code, _, err = await ssh_exec(relay, who.name, argv, token=who.token)
        assert (code, text in err) == (status, True), (argv, code, err)
    code, _, err = await ssh_exec(relay, other, ["share", "link", owned.name], token=other_token)
    assert code == 1 and "not yours" in err
    code, out, _ = await ssh_exec(relay, owned.name, ["share", "list", "--json"], token=owned.token)
    assert json.loads(out) == {"shares": []}
    mine = await make_link(relay, owned)
    code, _, err = await ssh_exec(relay, other, ["share", "revoke", str(mine["id"])], token=other_token)
    assert code == 1 and "no share" in err


async def test_the_admin_cli_makes_links(relay: RelayProcess, owned: Owned) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "relay", "share", "link", owned.name, "--label", "demo",
         "--data-dir", str(relay.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(f"http://localhost:{relay.http_port}/_relay/share/")
    assert (await CookieBrowser(relay).get(url)).status == 200
    listed = subprocess.run(
        [sys.executable, "-m", "relay", "share", "list", owned.name, "--data-dir", str(relay.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "link:demo" in listed.stdout and "uses 1" in listed.stdout
