"""The audit log (issue 12), against a real relay and real OpenSSH clients: visits by the owner, a
shared user, a link's guest and a public visitor each appear once with the right actor; sign-ins,
failed sign-ins, tunnels opening and closing, and share changes are there too; an owner reads the
events of their own hosts, a shared user does not; the admin reads all. The store file, read whole,
holds none of the secrets the test used."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any

from tests.stores import stored_bytes

from .conftest import Owned, unique_name
from .harness import Backend, CookieBrowser, RelayProcess, cookie_pair, fetch, open_tunnel, sign_in, ssh_exec


async def audit_of(relay: RelayProcess, user: str, token: str, *args: str) -> list[dict[str, Any]]:
    code, out, err = await ssh_exec(relay, user, ["audit", *args, "--json"], token=token)
    assert code == 0, err
    events: list[dict[str, Any]] = json.loads(out)
    return events


async def until(
    relay: RelayProcess, user: str, token: str, wanted: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Events until every (event, actor) of ``wanted`` is there (written in batches, once a second)."""
    deadline = time.monotonic() + 10
    while True:
        events = await audit_of(relay, user, token)
        if wanted <= {(e["event"], e["actor"]) for e in events} or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.3)


def admin_audit(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "audit", *args, "--data-dir", str(relay.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


async def test_the_audit_log_names_every_visitor_and_change(
    relay: RelayProcess, owned: Owned, backend: Backend
) -> None:
    alice, bob, carol = owned, unique_name("bob"), unique_name("carol")
    bob_token, carol_token = relay.add_user(bob), relay.add_user(carol)
    secrets = {alice.token, bob_token, carol_token}

    async def as_alice(*argv: str) -> tuple[int, str, str]:
        return await ssh_exec(relay, alice.name, list(argv), token=alice.token)

    code, _, err = await as_alice("share", "add", alice.name, "--with", bob)
    assert code == 0, err
    # The owner, twice with one token (one visit), and the shared user; carol is refused (no visit).
    for _ in range(2):
        assert (await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": alice.token})).status == 200
    ua = 'Mozilla/5.0 "quoted" ' + "x" * 400
    shared = await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": bob_token, "User-Agent": ua})
    assert shared.status == 200
    assert (await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": carol_token})).status == 403
    wrong = "rly_0123456789_" + "w" * 40
    secrets.add(wrong)
    assert (await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": wrong})).status == 401
    # Bob signs in through the login form; a guest opens a link; the host goes public for a visit.
    _, hand_off, posted = await sign_in(relay, alice.host, bob_token)
    assert posted.status == 302 and hand_off
    secrets.add(hand_off)
    secrets.update(cookie_pair(c).partition("=")[2] for c in posted.set_cookies)  # bob's relay session
    code, out, err = await as_alice("share", "link", alice.name, "--label", "ta", "--json")
    assert code == 0, err
    link_url = json.loads(out)["url"]
    secrets.add(link_url.rsplit("/", 1)[1])
    guest = CookieBrowser(relay)
    assert (await guest.get(link_url)).status == 200
    secrets.update(v for jar in guest.jar.values() for v in jar.values())
    assert (await as_alice("share", "public", alice.name, "on"))[0] == 0
    assert (await fetch(relay, alice.host, "/echo")).status == 200
    assert (await as_alice("share", "public", alice.name, "off"))[0] == 0
    # A second tunnel of alice's opens and closes.
    other = unique_name("oth")
    tunnel = await open_tunnel(relay, alice.name, f"{other}:80:127.0.0.1:{backend.port}", token=alice.token)
    mine = await fetch(relay, f"{other}.localhost", "/echo", headers={"X-Relay-Token": alice.token})
    assert mine.status == 200
    await tunnel.close()

    wanted = {
        ("visit", alice.name), ("visit", bob), ("visit", "link:ta"), ("visit", "public"),
        ("share_add", alice.name), ("link_add", alice.name), ("public_on", alice.name),
        ("public_off", alice.name), ("tunnel_open", alice.name), ("tunnel_close", alice.name),
    }  # fmt: skip
    events = await until(relay, alice.name, alice.token, wanted)
    seen = {(e["event"], e["actor"]) for e in events}
    assert wanted <= seen, wanted - seen
    visits = [e for e in events if e["event"] == "visit" and e["host"] == alice.host]
    assert [e["actor"] for e in visits].count(alice.name) == 1  # the first request of the session only
    assert not any(e["actor"] == carol for e in events)
    [bobs] = [e for e in visits if e["actor"] == bob]
    agent = bobs["detail"]["agent"]
    assert agent.startswith('Mozilla/5.0 \\"quoted\\"') and len(agent) < 220  # escaped and capped
    [closed] = [e for e in events if e["event"] == "tunnel_close" and e["host"] == f"{other}.localhost"]
    assert closed["detail"]["bytes_out"] > 0 and closed["detail"]["seconds"] >= 0
    assert closed["client"].startswith("127.0.0.1:")

    # Bob reads his own sign-in, not alice's host; the admin reads everything, failures included.
    bob_events = await audit_of(relay, bob, bob_token)
    assert any(e["event"] == "signin" and e["actor"] == bob for e in bob_events)
    assert not any(e["host"] == alice.host and e["event"] == "visit" for e in bob_events)
    everything = admin_audit(relay, "--host", alice.name, "--json")
    assert everything.returncode == 0, everything.stderr
    all_events = json.loads(everything.stdout)
    assert any(e["event"] == "signin_failed" and e["actor"] == "anonymous" for e in all_events)
    by_bob = json.loads(admin_audit(relay, "--user", bob, "--json").stdout)
    assert {"visit", "signin", "user_add"} <= {e["event"] for e in by_bob}  # by bob, or about him
    assert not any(e["actor"] == alice.name for e in by_bob)
    code, out, _ = await ssh_exec(relay, alice.name, ["share", "list", "--json"], token=alice.token)
    uses = {s["kind"]: s["uses"] for s in json.loads(out)["shares"]}
    assert uses == {"user": 1, "link": 1}  # bob (by token; his sign-in stopped at the hand-off), one guest

    # No secret in the store, read whole (SQLite's file and its write-ahead log; every row).
    with contextlib.closing(relay.store()) as store:
        stored = stored_bytes(store)
    assert stored and not [s for s in secrets if s.encode() in stored]


async def test_bad_audit_commands_say_what_is_wrong(relay: RelayProcess, owned: Owned) -> None:
    for argv, status, text in [
        (["audit", "--since", "5x"], 1, "invalid duration"),
        (["audit", "--limit", "lots"], 2, "--limit takes a number"),
        (["audit", "--limit", "0"], 1, "--limit must be"),
        (["audit", "--bogus", "1"], 2, "usage: audit"),
        (["audit", "--host"], 2, "usage: audit"),
    ]:
        code, _, err = await ssh_exec(relay, owned.name, argv, token=owned.token)
        assert (code, text in err) == (status, True), (argv, code, err)
    bad = admin_audit(relay, "--since", "5x")
    assert bad.returncode == 1 and "invalid duration" in bad.stderr
    assert admin_audit(relay, "--user", "nosuchuser").returncode == 1
