"""The SQLite store and the data directory: users, tokens, keys, names, sessions, integrity, locking."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.datadir import DB_FILE, LOCK_FILE, DataDirLock, check_private, ensure_data_dir, is_serving
from relay.errors import BadRequest, Conflict, NotFound, StoreError, TooManyRequests
from relay.sso import SharedSsoCodes
from relay.store import Store, parse_duration, split_token
from tests.stores import stored_bytes, twin


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return ensure_data_dir(tmp_path / "data")


@pytest.fixture
def sqlite_store(data_dir: Path) -> Iterator[Store]:
    """For what only SQLite has (a file, its query plans); ``store`` is each engine in turn."""
    s = Store.open(data_dir)
    yield s
    s.close()


# -- data dir --------------------------------------------------------------------------------------


def test_ensure_data_dir_creates_private_dir(tmp_path: Path) -> None:
    path = ensure_data_dir(tmp_path / "a" / "b")
    assert path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_ensure_data_dir_refuses_a_group_readable_dir(tmp_path: Path) -> None:
    path = tmp_path / "open"
    path.mkdir()
    path.chmod(0o755)
    with pytest.raises(StoreError) as info:
        ensure_data_dir(path)
    assert str(path) in str(info.value)
    assert "chmod 700" in str(info.value)


def test_check_private_ignores_missing_path(tmp_path: Path) -> None:
    check_private(tmp_path / "missing")  # no error: nothing to protect yet


def test_new_database_file_is_0600(sqlite_store: Store, data_dir: Path) -> None:
    assert sqlite_store.path == data_dir / DB_FILE
    assert stat.S_IMODE((data_dir / DB_FILE).stat().st_mode) == 0o600


def test_database_readable_by_others_is_refused_naming_the_file(data_dir: Path) -> None:
    Store.open(data_dir).close()
    db = data_dir / DB_FILE
    db.chmod(0o644)
    with pytest.raises(StoreError) as info:
        Store.open(data_dir)
    assert str(db) in str(info.value)
    assert "0644" in str(info.value)
    assert "chmod 600" in str(info.value)


def test_garbage_database_is_refused_and_left_untouched(data_dir: Path) -> None:
    db = data_dir / DB_FILE
    garbage = bytes(range(256)) * 64 + b"this is not an SQLite database" * 100
    db.write_bytes(garbage)
    db.chmod(0o600)
    with pytest.raises(StoreError) as info:
        Store.open(data_dir)
    assert str(db) in str(info.value)
    assert db.read_bytes() == garbage


def test_corrupted_pages_are_refused_and_left_untouched(data_dir: Path) -> None:
    s = Store.open(data_dir)
    s.add_user("alice")
    s.close()
    db = data_dir / DB_FILE
    data = bytearray(db.read_bytes())
    assert len(data) > 8192
    data[4096 + 100 :] = b"\x5a" * (len(data) - 4096 - 100)  # keep the header and page 1, ruin the rest
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(StoreError):
        Store.open(data_dir)
    assert db.read_bytes() == before


def test_reopen_keeps_data(store: Store) -> None:
    s = store
    alice = s.add_user("alice", admin=True)
    _, token = s.create_token("alice", label="laptop")
    s.add_key("alice", fingerprint="SHA256:abc", public_key="ssh-ed25519 AAAA", comment="c")
    s.claim_name("lab", alice.id)
    s2 = twin(store)
    try:
        assert s2.get_user("alice") == alice
        verified = s2.verify_token(token)
        assert verified is not None
        assert verified.id == alice.id
        assert [t.label for t in s2.list_tokens("alice")] == ["laptop"]
        assert [k.fingerprint for k in s2.list_keys()] == ["SHA256:abc"]
        assert s2.name_owner("lab") == alice.id
    finally:
        s2.close()


# -- users -----------------------------------------------------------------------------------------


def test_add_user_claims_the_default_name(store: Store) -> None:
    alice = store.add_user("alice")
    assert alice.name == "alice"
    assert alice.is_admin is False
    assert store.name_owner("alice") == alice.id
    assert store.list_names() == [("alice", "alice")]
    admin = store.add_user("root-admin", admin=True)
    assert store.get_user("root-admin").is_admin is True
    assert store.user_by_id(admin.id) == admin
    assert store.user_by_id(9999) is None
    assert [u.name for u in store.list_users()] == ["alice", "root-admin"]
    assert store.count_users() == 2


def test_duplicate_user_is_a_conflict(store: Store) -> None:
    store.add_user("alice")
    with pytest.raises(Conflict) as info:
        store.add_user("alice")
    assert info.value.status == 409
    assert store.count_users() == 1


def test_user_whose_name_is_owned_by_another_is_not_created(store: Store) -> None:
    alice = store.add_user("alice")
    assert store.claim_name("bob", alice.id)
    with pytest.raises(Conflict):
        store.add_user("bob")
    with pytest.raises(NotFound):
        store.get_user("bob")
    assert store.name_owner("bob") == alice.id


def test_get_unknown_user(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        store.get_user("nobody")
    assert info.value.status == 404


def test_remove_user_cascades(store: Store) -> None:
    alice = store.add_user("alice")
    bob = store.add_user("bob")
    _, token = store.create_token("alice")
    store.add_key("alice", fingerprint="SHA256:a", public_key="ssh-ed25519 A", comment="")
    store.claim_name("lab", alice.id)
    sid = store.create_session(alice, "lab.localhost", 3600)
    _, bob_token = store.create_token("bob")

    store.remove_user("alice")

    with pytest.raises(NotFound):
        store.get_user("alice")
    assert store.verify_token(token) is None
    assert store.list_tokens() == [store.list_tokens("bob")[0]]
    assert store.list_keys() == []
    assert store.user_for_key("alice", "SHA256:a") is None
    assert store.name_owner("lab") is None
    assert store.name_owner("alice") is None
    assert store.session_user(sid, "lab.localhost") is None
    # Bob is untouched.
    assert store.name_owner("bob") == bob.id
    verified = store.verify_token(bob_token)
    assert verified is not None
    assert verified.id == bob.id
    # The name is free again.
    assert store.claim_name("lab", bob.id)


def test_remove_unknown_user(store: Store) -> None:
    with pytest.raises(NotFound):
        store.remove_user("ghost")


# -- tokens ----------------------------------------------------------------------------------------


def test_create_and_verify_token(store: Store) -> None:
    alice = store.add_user("alice")
    info, token = store.create_token("alice", label="ci")
    assert token.startswith(info.id + "_")
    assert info.id.startswith("rly_")
    assert info.user == "alice"
    assert info.label == "ci"
    assert info.expires_at is None
    assert split_token(token) == (info.id, token[len(info.id) + 1 :])
    user = store.verify_token(token)
    assert user is not None
    assert user.id == alice.id


def test_tokens_are_distinct_and_long(store: Store) -> None:
    store.add_user("alice")
    tokens = {store.create_token("alice")[1] for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        parts = split_token(token)
        assert parts is not None
        assert len(parts[1]) >= 43  # 32 random bytes, base64url


def test_wrong_secret_or_malformed_token_is_refused(store: Store) -> None:
    store.add_user("alice")
    info, token = store.create_token("alice")
    secret = token[len(info.id) + 1 :]
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.verify_token(f"{info.id}_{wrong}") is None
    assert store.verify_token(f"{info.id}_") is None
    assert store.verify_token(info.id) is None
    assert store.verify_token("rly_ffffffffff_" + secret) is None  # unknown id, right secret
    assert store.verify_token("") is None
    assert store.verify_token(secret) is None
    assert store.verify_token("rly_zzzzzzzzzz_" + secret) is None
    assert store.verify_token(token + "x" * 300) is None
    assert store.verify_token(token) is not None


def test_revoked_token_is_refused(store: Store) -> None:
    store.add_user("alice")
    info, token = store.create_token("alice")
    other_info, other = store.create_token("alice")
    store.revoke_token(info.id)
    assert store.verify_token(token) is None
    assert store.verify_token(other) is not None
    assert [t.id for t in store.list_tokens("alice")] == [other_info.id]
    with pytest.raises(NotFound):
        store.revoke_token(info.id)


def test_expired_token_is_refused(store: Store) -> None:
    store.add_user("alice")
    info, token = store.create_token("alice", expires_at=2_000_000.0)
    assert info.expires_at == 2_000_000.0
    assert store.verify_token(token, now=1_999_999.0) is not None
    assert store.verify_token(token, now=2_000_000.0) is None
    assert store.verify_token(token, now=3_000_000.0) is None


def test_token_is_stored_only_as_hash(store: Store) -> None:
    store.add_user("alice")
    info, token = store.create_token("alice")
    secret = token[len(info.id) + 1 :]
    stored = stored_bytes(store)
    # We are looking at the right bytes: the id and the hash are there ...
    assert info.id.encode() in stored
    assert hashlib.sha256(secret.encode()).digest() in stored
    # ... and the secret is not, in any form.
    assert secret.encode() not in stored
    assert token.encode() not in stored


def test_session_id_is_stored_only_as_hash(store: Store) -> None:
    alice = store.add_user("alice")
    sid = store.create_session(alice, "lab.localhost", 3600)
    stored = stored_bytes(store)
    assert hashlib.sha256(sid.encode()).digest() in stored
    assert sid.encode() not in stored


def test_list_tokens(store: Store) -> None:
    store.add_user("alice")
    store.add_user("bob")
    a1, _ = store.create_token("alice", label="one")
    b1, _ = store.create_token("bob", label="b")
    a2, _ = store.create_token("alice", label="two", expires_at=123.0)
    assert [t.id for t in store.list_tokens()] == [a1.id, b1.id, a2.id]
    listed = store.list_tokens("alice")
    assert [(t.id, t.user, t.label, t.expires_at) for t in listed] == [
        (a1.id, "alice", "one", None),
        (a2.id, "alice", "two", 123.0),
    ]
    with pytest.raises(NotFound):
        store.list_tokens("nobody")
    with pytest.raises(NotFound):
        store.create_token("nobody")


# -- SSH keys --------------------------------------------------------------------------------------


def test_keys_add_list_remove(store: Store) -> None:
    alice = store.add_user("alice")
    store.add_user("bob")
    k1 = store.add_key("alice", fingerprint="SHA256:one", public_key="ssh-ed25519 AAA1", comment="laptop")
    k2 = store.add_key("bob", fingerprint="SHA256:two", public_key="ssh-ed25519 AAA2", comment="")
    assert (k1.user, k1.fingerprint, k1.public_key, k1.comment) == (
        "alice",
        "SHA256:one",
        "ssh-ed25519 AAA1",
        "laptop",
    )
    assert [k.id for k in store.list_keys()] == [k1.id, k2.id]
    assert store.list_keys("alice") == [k1]
    user = store.user_for_key("alice", "SHA256:one")
    assert user is not None
    assert user.id == alice.id
    # A key only logs in as the user it belongs to.
    assert store.user_for_key("bob", "SHA256:one") is None
    assert store.user_for_key("alice", "SHA256:two") is None
    assert store.user_for_key("alice", "SHA256:nope") is None

    store.remove_key(k1.id)
    assert store.list_keys("alice") == []
    assert store.user_for_key("alice", "SHA256:one") is None
    with pytest.raises(NotFound):
        store.remove_key(k1.id)


def test_duplicate_key_is_a_conflict(store: Store) -> None:
    store.add_user("alice")
    store.add_user("bob")
    store.add_key("alice", fingerprint="SHA256:same", public_key="k", comment="")
    with pytest.raises(Conflict):
        store.add_key("bob", fingerprint="SHA256:same", public_key="k", comment="")
    assert [k.user for k in store.list_keys()] == ["alice"]


def test_key_for_unknown_user(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_key("nobody", fingerprint="SHA256:x", public_key="k", comment="")
    with pytest.raises(NotFound):
        store.list_keys("nobody")


# -- names -----------------------------------------------------------------------------------------


def test_claim_name_first_claim_wins(store: Store) -> None:
    alice = store.add_user("alice")
    bob = store.add_user("bob")
    assert store.claim_name("lab", alice.id) is True
    assert store.claim_name("lab", bob.id) is False
    assert store.claim_name("lab", alice.id) is True  # the owner reclaiming
    assert store.name_owner("lab") == alice.id
    assert store.claim_name("alice", bob.id) is False  # default names are owned too
    assert store.list_names("alice") == [("alice", "alice"), ("lab", "alice")]
    assert store.list_names("bob") == [("bob", "bob")]


def test_release_name_frees_it(store: Store) -> None:
    alice = store.add_user("alice")
    bob = store.add_user("bob")
    store.claim_name("lab", alice.id)
    store.release_name("lab")
    assert store.name_owner("lab") is None
    assert store.claim_name("lab", bob.id) is True
    assert store.name_owner("lab") == bob.id
    with pytest.raises(NotFound):
        store.release_name("never-claimed")


# -- sessions --------------------------------------------------------------------------------------


def test_session_is_bound_to_its_host(store: Store) -> None:
    alice = store.add_user("alice")
    sid = store.create_session(alice, "lab.localhost", 3600)
    user = store.session_user(sid, "lab.localhost")
    assert user is not None
    assert user.id == alice.id
    assert store.session_user(sid, "other.localhost") is None
    assert store.session_user(sid, "localhost") is None
    assert store.session_user("x" + sid, "lab.localhost") is None
    assert store.session_user("", "lab.localhost") is None
    assert store.session_user("a" * 101, "lab.localhost") is None


def test_session_delete_and_expiry(store: Store) -> None:
    alice = store.add_user("alice")
    sid = store.create_session(alice, "localhost", 3600)
    store.delete_session(sid)
    assert store.session_user(sid, "localhost") is None
    expired = store.create_session(alice, "localhost", -1)
    assert store.session_user(expired, "localhost") is None


# -- live tunnels ----------------------------------------------------------------------------------


def test_live_tunnels(store: Store) -> None:
    alice = store.add_user("alice")
    store.put_live("b.localhost", alice.id, "1.2.3.4:5", 10.0)
    store.put_live("a.localhost", alice.id, "1.2.3.4:6", 11.0)
    store.update_live_bytes([("a.localhost", 100, 200)])
    live = store.list_live()
    assert [(t.host, t.user, t.client, t.bytes_in, t.bytes_out) for t in live] == [
        ("a.localhost", "alice", "1.2.3.4:6", 100, 200),
        ("b.localhost", "alice", "1.2.3.4:5", 0, 0),
    ]
    store.drop_live("a.localhost")
    assert [t.host for t in store.list_live()] == ["b.localhost"]
    store.clear_live()
    assert store.list_live() == []


# -- parse_duration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("45m", 45 * 60),
        ("90s", 90),
        ("2w", 14 * 86400),
        (" 7D ", 7 * 86400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30", "0d", "-5d", "1.5h", "5y", "d5", "h12", "1 d", "\u00b2d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_duration(text)


# -- the data-dir lock -----------------------------------------------------------------------------


def test_lock_second_instance_is_refused(data_dir: Path) -> None:
    first = DataDirLock(data_dir)
    first.acquire()
    try:
        assert (data_dir / LOCK_FILE).read_text() == str(os.getpid())
        with pytest.raises(StoreError) as info:
            DataDirLock(data_dir).acquire()
        assert str(os.getpid()) in str(info.value)
        assert str(data_dir) in str(info.value)
    finally:
        first.release()
    again = DataDirLock(data_dir)
    again.acquire()  # free after release
    again.release()


def test_is_serving(data_dir: Path) -> None:
    assert is_serving(data_dir) is False  # no lock file
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        assert is_serving(data_dir) is True
    finally:
        lock.release()
    assert (data_dir / LOCK_FILE).exists()
    assert is_serving(data_dir) is False


def test_lock_release_is_idempotent(data_dir: Path) -> None:
    lock = DataDirLock(data_dir)
    lock.acquire()
    lock.release()
    lock.release()
    assert is_serving(data_dir) is False


def test_revoking_a_token_ends_its_sessions_and_marks_it_dead(store: Store) -> None:
    store.add_user("erin")
    info, token = store.create_token("erin")
    user = store.verify_token(token)
    assert user is not None and user.credential == info.id
    sid = store.create_session(user, "lab.localhost", 3600)
    assert store.session_user(sid, "lab.localhost") is not None
    assert store.credential_alive(info.id)
    store.revoke_token(info.id)
    assert store.session_user(sid, "lab.localhost") is None
    assert not store.credential_alive(info.id)
    assert not store.credential_alive("key:12345")


# -- the credential cache ----------------------------------------------------------------------------


def test_a_token_revoked_by_another_process_is_refused_on_the_next_lookup(store: Store) -> None:
    store.add_user("carol")
    info, token = store.create_token("carol")
    assert store.verify_token(token) is not None
    assert store.verify_token(token) is not None  # now answered from the cache
    other = twin(store)  # what `relay token revoke` (or another node) does: another connection
    try:
        other.revoke_token(info.id)
    finally:
        other.close()
    assert store.verify_token(token) is None


def test_own_writes_and_expiry_drop_cached_credentials(store: Store) -> None:
    store.add_user("dave")
    info, token = store.create_token("dave", expires_at=time.time() + 3600)
    assert store.verify_token(token) is not None
    assert store.verify_token(token, now=time.time() + 7200) is None  # expired while cached
    store.revoke_token(info.id)
    assert store.verify_token(token) is None
    user = store.get_user("dave")
    sid = store.create_session(user, "dave.localhost", 60)
    assert store.session_user(sid, "dave.localhost") is not None
    assert store.session_user(sid, "other.localhost") is None  # sessions stay bound to their host
    store.delete_session(sid)
    assert store.session_user(sid, "dave.localhost") is None


def test_a_session_deleted_by_another_process_is_refused(store: Store) -> None:
    store.add_user("erin")
    info, token = store.create_token("erin")
    user = store.verify_token(token)
    assert user is not None
    sid = store.create_session(user, "erin.localhost", 60)
    assert store.session_user(sid, "erin.localhost") is not None
    other = twin(store)
    try:
        other.revoke_token(info.id)  # revoking the token ends the sessions made with it
    finally:
        other.close()
    assert store.session_user(sid, "erin.localhost") is None


def test_sessions_are_capped_per_user_oldest_replaced(store: Store) -> None:
    alice, bob = store.add_user("alice"), store.add_user("bob")
    bobs = store.create_session(bob, "b.localhost", 3600, max_per_user=3)
    sids = [store.create_session(alice, "a.localhost", 3600, max_per_user=3) for _ in range(10)]
    assert store.count_sessions(alice.id) == 3
    assert [store.session_user(s, "a.localhost") is not None for s in sids] == [False] * 7 + [True] * 3
    assert store.session_user(bobs, "b.localhost") is not None  # another user's are untouched


def test_expired_sessions_are_purged_on_demand_not_per_sign_in(store: Store) -> None:
    alice = store.add_user("alice")
    store.create_session(alice, "a.localhost", -1)
    live = store.create_session(alice, "a.localhost", 3600)
    assert store.count_sessions() == 2  # creating one no longer scans for expired rows
    assert store.purge_expired_sessions() == 1
    assert store.count_sessions() == 1 and store.session_user(live, "a.localhost") is not None


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("DELETE FROM sessions WHERE expires_at < 1", "sessions_expiry"),
        ("SELECT hash FROM sessions WHERE user_id = 1 ORDER BY created_at DESC", "sessions_user"),
        ("SELECT hash FROM sessions WHERE token_id = 'x'", "sessions_token"),
        ("SELECT * FROM sessions WHERE hash = x'00'", "sqlite_autoindex_sessions_1"),
    ],
)
def test_session_lookups_use_an_index(sqlite_store: Store, query: str, index: str) -> None:
    plan = " ".join(str(row) for row in sqlite_store.engine.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert index in plan and "SCAN sessions" not in plan.replace(f"USING INDEX {index}", ""), plan


def test_shared_sign_in_codes_are_one_use_bound_and_capped(store: Store) -> None:
    other = twin(store)  # another node
    try:
        codes, elsewhere = SharedSsoCodes(store, max_per_user=2), SharedSsoCodes(other, max_per_user=2)
        code = codes.issue(7, "lab.localhost", "rly_0123456789", state="state-a")
        assert elsewhere.redeem(code, "lab.localhost", "state-b") is None  # another browser: spent
        code = codes.issue(7, "lab.localhost", "rly_0123456789", state="state-a")
        assert elsewhere.redeem(code, "other.localhost", "state-a") is None  # another host: spent
        code = codes.issue(7, "lab.localhost", "rly_0123456789", state="state-a")
        grant = elsewhere.redeem(code, "lab.localhost", "state-a")
        assert grant is not None and (grant.user_id, grant.credential) == (7, "rly_0123456789")
        assert codes.redeem(code, "lab.localhost", "state-a") is None  # one use, whichever node
        codes.issue(8, "lab.localhost", state="s")
        codes.issue(8, "lab.localhost", state="s")
        with pytest.raises(TooManyRequests):
            codes.issue(8, "lab.localhost", state="s")
        assert code.encode() not in stored_bytes(store) and b"state-a" not in stored_bytes(store)
    finally:
        other.close()
