"""What only the PostgreSQL engine has: a URL, a shared schema that nodes migrate at once, a network."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import psycopg
import pytest

from relay.cluster.setup import SECRET_KEY, check_joining
from relay.datadir import ensure_data_dir
from relay.errors import Conflict, StoreError
from relay.store import Store
from relay.store.changes import ChangeFeed, listen
from relay.store.cluster import Route
from relay.store.copy import columns
from relay.store.postgres import RETRY_FIRST, ConnectBackoff, OnLoop, PostgresEngine, connect_string, redact
from relay.store.schema import SCHEMA_VERSION, TABLES
from tests.cuttable import Cuttable
from tests.pgserver import PostgresServer


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_nodes_started_at_once_migrate_one_after_another(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    opened: list[Store] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(Store.connect(url))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(opened) == 6
    opened[0].add_user("alice")
    assert all(s.get_user("alice").name == "alice" for s in opened)  # one schema, shared
    assert set(TABLES) <= set(_tables(url))
    for store in opened:
        store.close()


def test_a_newer_schema_is_refused_and_nothing_is_written(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    Store.connect(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE relay_schema SET version = %s", (SCHEMA_VERSION + 1,))
        changes = conn.execute("SELECT n FROM relay_changes").fetchone()
    before = _tables(url)
    with pytest.raises(StoreError) as info:
        Store.connect(url)
    assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value) and "upgrade relay" in str(info.value)
    assert _tables(url) == before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT n FROM relay_changes").fetchone() == changes


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://relay@127.0.0.1:1/relay", "cannot connect to postgresql://relay@127.0.0.1:1/relay"),
        ("sqlite:///var/lib/relay.db", "must be a postgresql:// URL"),
        ("mysql://relay@db/relay", "must be a postgresql:// URL, not 'mysql'"),
    ],
)
def test_a_store_url_that_cannot_work_is_a_clear_error(url: str, says: str) -> None:
    with pytest.raises(StoreError) as info:
        Store.connect(url)
    assert says in str(info.value)


def test_an_unknown_database_is_named_and_the_password_never_shown(postgres: PostgresServer) -> None:
    url = f"postgresql://relay:s3cret-pw@127.0.0.1:{postgres.port}/no_such_db"
    with pytest.raises(StoreError) as info:
        Store.connect(url)
    assert "no_such_db" in str(info.value) and "s3cret-pw" not in str(info.value)
    assert redact(url) == f"postgresql://relay@127.0.0.1:{postgres.port}/no_such_db"


def test_a_lost_connection_fails_one_call_and_is_made_again(postgres: PostgresServer) -> None:
    store = Store.connect(postgres.new_database())
    try:
        store.add_user("alice")
        pid = store.engine.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(postgres.url("postgres"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError):
            store.get_user("alice")
        assert store.get_user("alice").name == "alice"
    finally:
        store.close()


def test_a_silent_database_costs_one_waiting_connect_then_fails_at_once(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    with Cuttable(postgres.port) as cut:
        store = Store.connect(url.replace(f":{postgres.port}/", f":{cut.port}/") + "?connect_timeout=2")
        try:
            store.add_user("alice")
            cut.cut()
            with pytest.raises(StoreError):
                store.get_user("alice")  # the connection it had is broken
            before = cut.accepted
            with pytest.raises(StoreError, match="cannot connect"):
                store.get_user("alice")  # one try, which waits for the connect timeout
            assert cut.accepted == before + 1
            for _ in range(5):  # the next ones do not try: they fail at once, saying why
                with pytest.raises(StoreError, match=r"trying again in \d"):
                    store.get_user("alice")
            assert cut.accepted == before + 1
            cut.mend()
            time.sleep(RETRY_FIRST + 0.1)
            assert store.get_user("alice").name == "alice"  # made again once the delay is over
        finally:
            store.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


#: (time, what happens, refused?) in order: "ask" is a thread asking to connect (and trying when
#: not refused), "fail" and "ok" how that try ended.
BACKOFF_SCRIPT = [
    (0.0, "ask", False), (0.0, "ask", False),  # all is well: every thread connects at once
    (0.0, "fail", None),
    (0.1, "ask", True), (0.24, "ask", True),  # within the first delay (0.25 s)
    (0.26, "ask", False), (0.26, "ask", True),  # one thread tries; the others wait for it
    (0.3, "fail", None),  # the delay doubles: next try at 0.8
    (0.7, "ask", True), (0.81, "ask", False), (0.9, "fail", None),  # next at 1.9
    (1.8, "ask", True), (1.95, "ask", False), (2.0, "fail", None),  # next at 4.0
    (3.9, "ask", True), (4.1, "ask", False), (4.2, "fail", None),  # capped at 2 s: next at 6.2
    (6.1, "ask", True), (6.3, "ask", False), (6.3, "ok", None),
    (6.3, "ask", False), (6.3, "ask", False),  # well again: no waiting for anyone
]  # fmt: skip


def test_connect_backoff_lets_one_thread_try_after_a_doubling_delay() -> None:
    clock = _Clock()
    backoff = ConnectBackoff(clock)
    for step, (at, event, refused) in enumerate(BACKOFF_SCRIPT):
        clock.now = at
        if event == "ask":
            refusal = backoff.refusal()
            assert (refusal is not None) == refused, (step, at, refusal)
            if refusal is not None:
                assert refusal.startswith("no route (trying again in"), refusal
        elif event == "fail":
            backoff.failed("no route")
        else:
            backoff.succeeded()


def test_both_engines_hold_the_same_columns(postgres: PostgresServer, tmp_path: Path) -> None:
    lite = Store.open(ensure_data_dir(tmp_path / "data"))
    pg = Store.connect(postgres.new_database())
    try:
        for table in TABLES:
            assert sorted(columns(lite.engine, table)) == sorted(columns(pg.engine, table)), table
    finally:
        lite.close()
        pg.close()


async def test_another_nodes_revocation_reaches_this_nodes_cache_within_a_second(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    node, other = Store.connect(url), Store.connect(url)
    engine = node.engine
    assert isinstance(engine, PostgresEngine)
    engine.feed = feed = ChangeFeed(grace=60)
    listening = asyncio.create_task(listen(connect_string(url), feed))
    try:
        while not feed.listening:
            await asyncio.sleep(0.01)
        other.add_user("alice")
        info, token = other.create_token("alice")
        assert await asyncio.to_thread(node.verify_token, token) is not None
        other.revoke_token(info.id)  # another node's write: only its NOTIFY tells this one
        started = time.monotonic()
        while await asyncio.to_thread(node.verify_token, token) is not None:
            assert time.monotonic() - started < 1.0, "the revocation did not arrive within 1 s"
            await asyncio.sleep(0.01)
    finally:
        listening.cancel()
        node.close()
        other.close()


def test_a_query_on_the_event_loop_thread_is_refused(postgres: PostgresServer) -> None:
    store = Store.connect(postgres.new_database())
    try:
        store.add_user("alice")
        store.engine.forbid_thread(threading.get_ident())
        with pytest.raises(OnLoop):
            store.get_user("alice")
        done: list[str] = []
        worker = threading.Thread(target=lambda: done.append(store.get_user("alice").name))
        worker.start()
        worker.join()
        assert done == ["alice"]  # any other thread reads on
    finally:
        store.close()


def test_a_tunnel_held_by_a_live_node_is_seen_from_the_others(postgres: PostgresServer) -> None:
    store = Store.connect(postgres.new_database())
    try:
        alice = store.add_user("alice")
        store.register_node("n1", "127.0.0.11:7700", "inc-1")
        store.put_live("alice.localhost", alice.id, "198.51.100.7:5555", 1000.0, node="n1")
        seen = store.live_elsewhere("alice.localhost", "n2")
        assert seen is not None and (seen.node, seen.client, seen.user) == (
            "n1",
            "198.51.100.7:5555",
            "alice",
        )
        assert store.live_elsewhere("alice.localhost", "n1") is None  # its own node looks at its registry
        assert [t.host for t in store.list_live()] == ["alice.localhost"]
        store.engine.execute("UPDATE nodes SET heartbeat_at = heartbeat_at - 11")  # n1 silent for 11 s
        assert store.live_elsewhere("alice.localhost", "n2") is None  # a dead node's tunnel is not live
        assert store.list_live() == []  # nor listed by `relay tunnels`
        assert [n.alive for n in store.nodes()] == [False]
        assert store.route("alice.localhost") == Route("n1", alice.id, 1000.0)  # void, but still its row
        store.leave("n1", "inc-1")
        assert store.routes() == {} and store.nodes() == []
    finally:
        store.close()


def test_joining_refuses_a_live_name_and_a_missing_secret(postgres: PostgresServer) -> None:
    store = Store.connect(postgres.new_database())
    try:
        secret = check_joining(store, "n1")  # the first node of a new cluster makes the secret
        assert len(secret) == 64 and check_joining(store, "n2") == secret  # later ones share it
        store.register_node("n1", "127.0.0.11:7700", "inc-1")
        with pytest.raises(Conflict, match="node 'n1' is already in the cluster"):
            check_joining(store, "n1")
        store.engine.execute("DELETE FROM cluster_keys WHERE name = ?", (SECRET_KEY,))
        before = store.engine.execute("SELECT count(*) FROM cluster_keys").fetchone()
        with pytest.raises(StoreError, match=r"secret is missing .* while nodes n1 run"):
            check_joining(store, "n2")
        assert store.engine.execute("SELECT count(*) FROM cluster_keys").fetchone() == before  # nothing made
        store.engine.execute("UPDATE nodes SET heartbeat_at = heartbeat_at - 11")  # n1 is dead now
        assert len(check_joining(store, "n1")) == 64  # a dead node's name is free; a new secret is made
    finally:
        store.close()
