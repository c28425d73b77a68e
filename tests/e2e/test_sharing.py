"""Sharing a tunnel with another relay user (issue 12, first slice), against a real relay and real
OpenSSH clients: alice shares her name with bob over SSH; bob visits it with his own token and his own
sign-in, carol cannot; bob cannot revoke it; alice's revoke refuses bob at his next request. The admin
CLI does the same for any owner. Bad input gets one clear line and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlsplit

from .conftest import Owned, unique_name
from .harness import RelayProcess, cookie_pair, fetch, sign_in, ssh_exec


def admin(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "share", *args, "--data-dir", str(relay.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_alice_shares_with_bob_and_revokes(relay: RelayProcess, owned: Owned) -> None:
    alice = owned
    bob, carol = unique_name("bob"), unique_name("carol")
    bob_token, carol_token = relay.add_user(bob), relay.add_user(carol)
    code, out, err = await ssh_exec(
        relay, alice.name, ["share", "add", alice.name, "--with", bob, "--json"], token=alice.token
    )
    assert code == 0, err
    share = json.loads(out)
    assert share["host"] == alice.host and share["with"] == bob and share["id"].startswith("shr_")

    as_bob = await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": bob_token})
    assert as_bob.status == 200 and "x-relay-token" not in {k.lower() for k in as_bob.json()["headers"]}
    as_carol = await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": carol_token})
    assert as_carol.status == 403

    # Bob's own sign-in: the login origin hands him off to alice's host, and his home page lists it.
    state_cookie, _, posted = await sign_in(relay, alice.host, bob_token)
    assert posted.status == 302 and "/_relay/sso?code=" in posted.headers["Location"]
    relay_cookie = cookie_pair(posted.set_cookies[0])
    hand_off = urlsplit(posted.headers["Location"])
    sso = await fetch(
        relay, alice.host, f"{hand_off.path}?{hand_off.query}", headers={"Cookie": state_cookie}
    )
    assert sso.status == 302
    bob_session = cookie_pair(sso.set_cookies[0])
    assert (await fetch(relay, alice.host, "/echo", headers={"Cookie": bob_session})).status == 200
    home = await fetch(relay, "localhost", "/", headers={"Cookie": relay_cookie})
    assert alice.url.encode() in home.body and f"shared by {alice.name}".encode() in home.body

    # Bob cannot revoke it, nor reshare it; alice can, and bob is refused at his next request.
    code, _, err = await ssh_exec(relay, bob, ["share", "revoke", share["id"]], token=bob_token)
    assert code == 1 and "no share" in err
    code, _, err = await ssh_exec(relay, bob, ["share", "add", alice.name, "--with", carol], token=bob_token)
    assert code == 1 and "not yours" in err
    code, out, _ = await ssh_exec(relay, alice.name, ["share", "list", "--json"], token=alice.token)
    assert code == 0 and [s["id"] for s in json.loads(out)["shares"]] == [share["id"]]
    code, _, err = await ssh_exec(relay, alice.name, ["share", "revoke", share["id"]], token=alice.token)
    assert code == 0, err
    assert (await fetch(relay, alice.host, "/echo", headers={"Cookie": bob_session})).status == 403
    assert (await fetch(relay, alice.host, "/echo", headers={"X-Relay-Token": bob_token})).status == 403


async def test_bad_share_commands_say_what_is_wrong_and_change_nothing(
    relay: RelayProcess, owned: Owned
) -> None:
    other = unique_name("oth")
    relay.add_user(other)
    cases = [
        (["share", "add", owned.name, "--with", "nosuchuser"], 1, "no relay user"),
        (["share", "add", owned.name, "--with", other, "--expires", "5x"], 1, "invalid duration"),
        (["share", "add", owned.name, "--with", owned.name], 1, "already its owner's"),
        (["share", "add", "nobodys", "--with", other], 1, "not owned"),
        (["share", "add", owned.name], 2, "usage: share"),
        (["share", "frobnicate"], 2, "usage: share"),
        (["share", "revoke", "shr_000000000000"], 1, "no share"),
    ]
    for argv, status, text in cases:
        code, _, err = await ssh_exec(relay, owned.name, argv, token=owned.token)
        assert (code, text in err) == (status, True), (argv, code, err)
    code, out, _ = await ssh_exec(relay, owned.name, ["share", "list", "--json"], token=owned.token)
    assert json.loads(out) == {"shares": []}
    again = await ssh_exec(
        relay, owned.name, ["share", "add", owned.name, "--with", other], token=owned.token
    )
    assert again[0] == 0
    duplicate = await ssh_exec(
        relay, owned.name, ["share", "add", owned.name, "--with", other], token=owned.token
    )
    assert duplicate[0] == 1 and "already shared" in duplicate[2]


async def test_the_admin_cli_shares_for_any_owner(relay: RelayProcess, owned: Owned) -> None:
    guest = unique_name("gst")
    token = relay.add_user(guest)
    added = admin(relay, "add", owned.name, "--with", guest, "--expires", "1h", "--json")
    assert added.returncode == 0, added.stderr
    share = json.loads(added.stdout)
    assert share["expires"] is not None
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token})).status == 200
    listed = admin(relay, "list", owned.name)
    assert listed.returncode == 0 and share["id"] in listed.stdout and guest in listed.stdout
    assert admin(relay, "add", owned.name, "--with", guest, "--expires", "400d").returncode == 1
    assert admin(relay, "revoke", share["id"]).returncode == 0
    assert (await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": token})).status == 403
    missing = admin(relay, "revoke", share["id"])
    assert missing.returncode == 1 and "no share" in missing.stderr


async def test_public_on_lets_anyone_in_and_off_restores_auth(relay: RelayProcess, owned: Owned) -> None:
    assert (await fetch(relay, owned.host, "/echo")).status == 401
    code, out, err = await ssh_exec(
        relay, owned.name, ["share", "public", owned.name, "on", "--json"], token=owned.token
    )
    assert code == 0 and json.loads(out) == {"host": owned.host, "public": True}, err
    # No credential needed; one that is sent but wrong is still refused, as anywhere.
    wrong = await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": "rly_0000000000_nope"})
    assert wrong.status == 401
    plain = await fetch(relay, owned.host, "/echo?keep=1", headers={"Cookie": "relay_session=z; app=1"})
    assert plain.status == 200 and plain.json()["cookies"] == {"app": "1"}  # the relay's cookie stripped
    assert plain.json()["path"] == "/echo?keep=1"
    code, out, _ = await ssh_exec(relay, owned.name, ["tunnels", "--json"], token=owned.token)
    assert [t["public"] for t in json.loads(out)["tunnels"] if t["host"] == owned.host] == [True]
    listed = subprocess.run(
        [sys.executable, "-m", "relay", "tunnels", "--json", "--data-dir", str(relay.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert [t["public"] for t in json.loads(listed.stdout)["tunnels"] if t["host"] == owned.host] == [True]
    # Someone else cannot flip it; the owner turns it off and auth is back at the next request.
    other = unique_name("oth")
    other_token = relay.add_user(other)
    code, _, err = await ssh_exec(relay, other, ["share", "public", owned.name, "off"], token=other_token)
    assert code == 1 and "not yours" in err
    code, _, _ = await ssh_exec(
        relay, owned.name, ["share", "public", owned.name, "maybe"], token=owned.token
    )
    assert code == 2
    code, _, _ = await ssh_exec(relay, owned.name, ["share", "public", owned.name, "off"], token=owned.token)
    assert code == 0
    assert (await fetch(relay, owned.host, "/echo")).status == 401
    assert admin(relay, "public", owned.name, "on").returncode == 0  # the admin CLI does the same
    assert (await fetch(relay, owned.host, "/echo")).status == 200
    assert admin(relay, "public", owned.name, "off").returncode == 0
    assert (await fetch(relay, owned.host, "/echo")).status == 401


def test_a_public_share_lists_as_open_to_anyone(relay: RelayProcess, owned: Owned) -> None:
    assert admin(relay, "public", owned.name, "on").returncode == 0
    try:
        listed = admin(relay, "list", owned.name)
        assert listed.returncode == 0 and f"{owned.host}\tpublic\tanyone\towner {owned.name}" in listed.stdout
    finally:
        assert admin(relay, "public", owned.name, "off").returncode == 0
