"""Sharing: the pure rules (which host, who may share, how long) and the store's shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.datadir import ensure_data_dir
from relay.errors import BadRequest, Conflict, NotFound
from relay.sharing import MAX_SHARE_SECONDS, parse_duration, public_refusal, share_host, share_refusal
from relay.store import Store

DOMAIN = "relay.example.com"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("lab", ("lab.relay.example.com", "lab")),
        ("LAB.relay.example.com.", ("lab.relay.example.com", "lab")),
        ("app.example.org", ("app.example.org", None)),
    ],
)
def test_share_host_names_a_tunnel_name_or_a_custom_domain(
    target: str, expected: tuple[str, str | None]
) -> None:
    assert share_host(target, relay_domain=DOMAIN) == expected


@pytest.mark.parametrize("target", ["relay.example.com", "a.b.relay.example.com", "bad_name", "1.2.3.4"])
def test_share_host_refuses_anything_else(target: str) -> None:
    with pytest.raises(BadRequest):
        share_host(target, relay_domain=DOMAIN)


@pytest.mark.parametrize(
    ("caller", "owner", "with_id", "admin", "refused"),
    [
        (1, 1, 2, False, None),  # the owner shares with another user
        (2, 1, 3, False, "not yours"),  # someone else's name
        (1, None, 2, False, "not owned"),  # nobody's yet
        (1, 1, 1, False, "already its owner's"),  # with oneself
        (9, 1, 2, True, None),  # an admin acts for the owner
        (9, 1, 1, True, "already its owner's"),
    ],
)
def test_share_refusal(
    caller: int, owner: int | None, with_id: int, admin: bool, refused: str | None
) -> None:
    why = share_refusal(caller_id=caller, owner_id=owner, with_id=with_id, host="lab.x", admin=admin)
    assert (why is None) if refused is None else (why is not None and refused in why)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("45m", 2700), ("1h", 3600), ("30d", 2_592_000)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "0d", "-1h", "1.5h", "400d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_duration(text)
    assert MAX_SHARE_SECONDS < 400 * 86400


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(ensure_data_dir(tmp_path / "data"))
    s.record_relay_domain(DOMAIN)
    yield s
    s.close()


def test_a_share_lets_one_user_in_until_revoked(store: Store) -> None:
    alice, bob, carol = (store.add_user(n) for n in ("alice", "bob", "carol"))
    store.claim_name("lab", alice.id)
    host = "lab.relay.example.com"
    assert store.shared_with(host) == frozenset()
    share = store.add_share(host, alice.id, bob.id, expires_at=None)
    assert store.shared_with(host) == {bob.id}  # the cache was dropped by the write
    assert store.hosts_shared_with(bob.id) == [(host, "alice")] and store.hosts_shared_with(carol.id) == []
    with pytest.raises(Conflict):
        store.add_share(host, alice.id, bob.id, expires_at=None)
    with pytest.raises(NotFound):
        store.revoke_share(share.id, owner_id=bob.id)  # not bob's to revoke
    assert [s.id for s in store.list_shares(owner_id=alice.id)] == [share.id]
    store.revoke_share(share.id, owner_id=alice.id)
    assert store.shared_with(host) == frozenset() and store.list_shares() == []


def test_an_expired_share_lets_nobody_in(store: Store) -> None:
    alice, bob = store.add_user("alice"), store.add_user("bob")
    store.add_share("lab.relay.example.com", alice.id, bob.id, expires_at=1000.0)
    assert store.shared_with("lab.relay.example.com", now=999.0) == {bob.id}
    assert store.shared_with("lab.relay.example.com", now=1000.0) == frozenset()  # cached until it ends
    assert store.hosts_shared_with(bob.id, now=1001.0) == []


def test_shares_go_with_the_name_the_domain_and_the_users(store: Store) -> None:
    alice, bob = store.add_user("alice"), store.add_user("bob")
    store.claim_name("lab", alice.id)
    store.add_share("lab.relay.example.com", alice.id, bob.id, expires_at=None)
    store.release_name("lab")
    assert store.list_shares() == []
    store.add_domain("app.example.org", "alice", "challenge")
    store.mark_domain_verified("app.example.org", alice.id)
    store.add_share("app.example.org", alice.id, bob.id, expires_at=None)
    store.remove_domain("app.example.org")
    assert store.list_shares() == []
    store.add_share("x.relay.example.com", alice.id, bob.id, expires_at=None)
    store.remove_user("bob")
    assert store.list_shares() == []


@pytest.mark.parametrize(
    ("caller", "owner", "admin", "refused"),
    [(1, 1, False, None), (2, 1, False, "not yours"), (1, None, False, "not owned"), (9, 1, True, None)],
)
def test_public_refusal(caller: int, owner: int | None, admin: bool, refused: str | None) -> None:
    why = public_refusal(caller_id=caller, owner_id=owner, host="lab.x", admin=admin)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_a_public_host_is_one_row_on_and_none_off(store: Store) -> None:
    alice = store.add_user("alice")
    host = "lab.relay.example.com"
    assert store.access(host) == (frozenset(), False)
    assert store.set_public(host, alice.id, True) and not store.set_public(host, alice.id, True)
    assert store.is_public(host) and [s.kind for s in store.list_shares(host=host)] == ["public"]
    assert store.set_public(host, alice.id, False) and not store.is_public(host)
    assert not store.set_public(host, alice.id, False)
