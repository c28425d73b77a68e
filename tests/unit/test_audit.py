"""The audit log: who reads which event (a pure rule), the visit memory, the bounded queue, tunnel
events from the registry, and the store's retention."""

from __future__ import annotations

import time

import pytest

from relay import audit
from relay.audit import AuditLog, Event, may_read, write_batch
from relay.errors import BadRequest
from relay.store import Store
from relay.tunnels import Registry, Tunnel


@pytest.mark.parametrize(
    ("owner_id", "user_id", "caller", "admin", "allowed"),
    [
        (1, None, 1, False, True),  # a visit to the caller's host
        (1, 1, 1, False, True),  # the caller's own tunnel opening
        (None, 1, 1, False, True),  # the caller's own sign-in
        (1, None, 2, False, False),  # someone else's host (even if shared with the caller)
        (None, None, 2, False, False),  # a failed sign-in of nobody in particular
        (None, None, 2, True, True),  # the admin reads everything
        (1, 3, 2, False, False),
    ],
)
def test_may_read(owner_id: int | None, user_id: int | None, caller: int, admin: bool, allowed: bool) -> None:
    assert may_read(owner_id=owner_id, user_id=user_id, caller_id=caller, admin=admin) is allowed


def test_a_visit_is_recorded_once_per_session_and_host() -> None:
    batches: list[list[Event]] = []
    log = AuditLog(batches.append, max_seen=2)

    def visit(key: str, host: str) -> bool:
        if not log.first_visit(host, key):
            return False
        log.visit(host=host, actor="alice", client="127.0.0.1", user_agent="ua", owner_id=1)
        return True

    assert visit("s1", "a.x") and not visit("s1", "a.x")
    assert visit("s1", "b.x") and visit("s2", "a.x")
    assert visit("s1", "a.x")  # forgotten: the memory of sessions is bounded
    assert log.flush() == 4 and [e.host for e in batches[0]] == ["a.x", "b.x", "a.x", "a.x"]
    assert log.flush() == 0 and len(batches) == 1


def test_the_queue_is_bounded_and_drops_are_counted() -> None:
    log = AuditLog(lambda batch: None, max_pending=3)
    for n in range(5):
        log.record(Event("signin_failed", audit.ANONYMOUS, client=f"10.0.0.{n}"))
    assert log.dropped == 2 and log.flush() == 3 and log.dropped == 0


def test_tunnels_open_and_close_with_duration_and_bytes() -> None:
    batches: list[list[Event]] = []
    log, registry = AuditLog(batches.append), Registry()
    registry.subscribe(log.on_registry_change)
    first = Tunnel("lab.x", 1, "alice", "127.0.0.1:5000", opener=None, since=time.time() - 5)  # type: ignore[arg-type]
    registry.add(first)
    first.bytes_out = 1234
    second = Tunnel("lab.x", 1, "alice", "127.0.0.1:6000", opener=None)  # type: ignore[arg-type]
    registry.add(second)  # displaces the first
    registry.remove(second)
    log.flush()
    kinds = [(e.event, e.client) for e in batches[0]]
    assert kinds == [
        ("tunnel_open", "127.0.0.1:5000"),
        ("tunnel_close", "127.0.0.1:5000"),
        ("tunnel_open", "127.0.0.1:6000"),
        ("tunnel_close", "127.0.0.1:6000"),
    ]
    closed = batches[0][1]
    assert closed.detail["bytes_out"] == 1234 and float(str(closed.detail["seconds"])) >= 5
    assert closed.owner_id == closed.user_id == 1


def test_events_are_read_per_reader_and_kept_within_their_limits(store: Store) -> None:
    alice, bob = store.add_user("alice"), store.add_user("bob")
    now = time.time()
    write_batch(
        store,
        [
            Event("visit", "bob", "lab.x", "1.2.3.4", {}, owner_id=alice.id, at=now - 100 * 86400),
            Event("visit", "bob", "lab.x", "1.2.3.4", {"agent": "ua"}, owner_id=alice.id, at=now - 10),
            Event("signin", "bob", "", "1.2.3.4", {"via": "login form"}, user_id=bob.id, at=now - 5),
        ],
    )
    assert [e.event for e in audit.read(store, reader=alice)] == ["visit", "visit"]
    assert [e.event for e in audit.read(store, reader=bob)] == ["signin"]  # not alice's host
    assert len(audit.read(store, reader=None, since=now - 86400)) == 2
    assert [e.actor for e in audit.read(store, reader=None, user=bob)] == ["bob", "bob", "bob"]
    with pytest.raises(BadRequest):
        audit.read(store, reader=None, limit=0)
    assert store.purge_audit(before=now - 90 * 86400, max_rows=1) == 2  # too old, then too many
    assert [e.event for e in audit.read(store, reader=None)] == ["signin"]


def test_a_removed_users_events_are_read_by_nobody_but_the_admin(store: Store) -> None:
    alice = store.add_user("alice")
    write_batch(store, [Event("signin", "alice", user_id=alice.id, owner_id=alice.id)])
    store.remove_user("alice")
    again = store.add_user("alice2")  # may be given the same id
    assert audit.read(store, reader=again) == [] and len(audit.read(store, reader=None)) == 1


def test_user_agents_are_escaped_and_capped() -> None:
    text = audit.agent("a\x1b[31m" + "x" * 500)
    assert "\x1b" not in text and len(text) <= audit.MAX_AGENT + 20
    assert audit.agent(None) == ""
