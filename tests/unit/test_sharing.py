"""Sharing: the pure rules (which host, who may share, how long) and the store's shares."""

from __future__ import annotations

import time

import pytest

from relay.errors import BadRequest, Conflict, NotFound
from relay.sharing import (
    DEFAULT_LINK_SECONDS,
    MAX_LINK_SECONDS,
    MAX_SHARE_SECONDS,
    link_actor,
    link_expiry,
    link_gone,
    link_label,
    link_refusal,
    may_jump,
    new_link_code,
    parse_duration,
    public_refusal,
    share_host,
    share_refusal,
)
from relay.store import ShareInfo, Store
from tests.stores import stored_bytes

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
def store(store: Store) -> Store:
    """The conftest's store, on each engine, with the relay's domain recorded."""
    store.record_relay_domain(DOMAIN)
    return store


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


# -- share links --------------------------------------------------------------------------------


def _link(expires_at: float | None = 200.0, kind: str = "link") -> ShareInfo:
    return ShareInfo("shr_1", "lab.x", "alice", kind, None, 0.0, expires_at, "ta", 0, 1)


@pytest.mark.parametrize(
    ("link", "guests", "gone"),
    [
        (_link(), 0, None),
        (_link(), 2, "used up"),  # at the most guests
        (None, 0, "no longer valid"),  # unknown or forged
        (_link(100.0), 0, "no longer valid"),  # expired (now is 100)
        (_link(None), 0, "no longer valid"),  # a link always ends
        (_link(kind="user"), 0, "no longer valid"),  # not a link at all
    ],
)
def test_link_gone(link: ShareInfo | None, guests: int, gone: str | None) -> None:
    why = link_gone(link, guests=guests, max_guests=2, now=100.0)
    assert (why is None) if gone is None else (why is not None and gone in why)


@pytest.mark.parametrize(
    ("text", "ends"), [(None, 1000 + DEFAULT_LINK_SECONDS), ("1h", 4600), ("30d", 1000 + MAX_LINK_SECONDS)]
)
def test_link_expiry(text: str | None, ends: float) -> None:
    assert link_expiry(text, now=1000) == ends


@pytest.mark.parametrize("text", ["31d", "5x", "0s"])
def test_link_expiry_refuses(text: str) -> None:
    with pytest.raises(BadRequest):
        link_expiry(text, now=0)


@pytest.mark.parametrize(
    ("caller", "owner", "admin", "refused"),
    [(1, 1, False, None), (2, 1, False, "not yours"), (1, None, False, "not owned"), (9, 1, True, None)],
)
def test_link_refusal(caller: int, owner: int | None, admin: bool, refused: str | None) -> None:
    why = link_refusal(caller_id=caller, owner_id=owner, host="lab.x", admin=admin)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_link_labels_and_codes() -> None:
    assert link_label("  ta ") == "ta" and link_label(None) == ""
    for bad in ("x" * 41, "a\nb", "\x1b[31m"):
        with pytest.raises(BadRequest):
            link_label(bad)
    codes = {new_link_code() for _ in range(100)}
    assert len(codes) == 100 and all(len(c) >= 32 for c in codes)  # 192 bits, URL-safe
    assert link_actor("ta", "shr_1") == "link:ta" and link_actor("", "shr_1") == "link:shr_1"


def test_a_link_is_kept_hashed_and_its_guests_end_with_it(store: Store) -> None:
    alice = store.add_user("alice")
    host = "lab.relay.example.com"
    code = new_link_code()
    link = store.add_link(host, alice.id, code, label="ta", expires_at=time.time() + 60, max_per_host=2)
    assert store.link_by_code(code) == link and store.link_by_code(code + "x") is None
    assert code.encode() not in stored_bytes(store)
    assert store.insert_guest_session("sid-1", link.id, host, max_per_link=2)
    guest = store.guest_session("sid-1", host)
    assert guest is not None and guest.share_id == link.id and guest.host == host
    assert store.guest_session("sid-1", "other.relay.example.com") is None  # bound to its host
    assert store.get_share(link.id).uses == 1
    for sid in ("sid-2", "sid-3"):  # past the most, the oldest guest session goes
        store.insert_guest_session(sid, link.id, host, max_per_link=2)
    assert store.count_guest_sessions(link.id) == 2 and store.guest_session("sid-1", host) is None
    store.revoke_share(link.id)
    assert store.guest_session("sid-3", host) is None and store.count_guest_sessions(link.id) == 0
    assert not store.insert_guest_session("sid-4", link.id, host, max_per_link=2)  # revoked: nothing


def test_links_per_host_are_capped_and_expired_links_open_nothing(store: Store) -> None:
    alice = store.add_user("alice")
    host = "lab.relay.example.com"
    store.add_link(host, alice.id, "c1", label="", expires_at=time.time() + 60, max_per_host=2)
    old = store.add_link(host, alice.id, "c2", label="", expires_at=time.time() - 1, max_per_host=2)
    store.add_link(host, alice.id, "c3", label="", expires_at=time.time() + 60, max_per_host=2)
    with pytest.raises(Conflict, match="revoke one"):
        store.add_link(host, alice.id, "c4", label="", expires_at=time.time() + 60, max_per_host=2)
    assert store.link_by_code("c2") is None and old.kind == "link"
    assert not store.insert_guest_session("sid", old.id, host, max_per_link=2)


@pytest.mark.parametrize(
    ("user_id", "shared", "allowed"),
    [
        (1, frozenset(), True),  # the owner
        (2, frozenset({2}), True),  # a user the host is shared with
        (2, frozenset(), False),
        (3, frozenset({2}), False),
    ],
)
def test_may_jump_owner_and_shared_users_only(user_id: int, shared: frozenset[int], allowed: bool) -> None:
    assert may_jump(user_id=user_id, owner_id=1, shared=shared) is allowed
