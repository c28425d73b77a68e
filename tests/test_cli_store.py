"""`relay store migrate` and `--store`: a node's SQLite store copied into a real PostgreSQL, and the
admin commands run against it."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from relay import hostkey
from relay.cli import app
from relay.datadir import DataDirLock, ensure_data_dir, record_store
from relay.store import AuditRow, Store
from relay.store.copy import SKIPPED
from relay.store.schema import TABLES
from tests.pgserver import PostgresServer

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with something in every table a stopped relay keeps."""
    tmp_path.chmod(0o700)
    path = ensure_data_dir(tmp_path / "data")
    store = Store.open(path)
    alice = store.add_user("alice", admin=True)
    bob = store.add_user("bob")
    store.create_token("alice", label="laptop")
    store.add_key("bob", fingerprint="SHA256:abc", public_key="ssh-ed25519 AAAA", comment="c")
    store.claim_name("lab", alice.id)
    store.record_relay_domain("relay.example.com")
    store.add_domain("lab.example.org", "alice", "relay-verify=x")
    share = store.add_share("lab.relay.example.com", alice.id, bob.id, expires_at=None)
    link = store.add_link(
        "lab.relay.example.com", alice.id, "code" * 8, label="ta", expires_at=time.time() + 60, max_per_host=5
    )
    store.insert_guest_session("guest-sid", link.id, "lab.relay.example.com", max_per_link=5)
    store.create_session(bob, "lab.relay.example.com", 3600)
    store.add_audit([AuditRow(time.time(), "share_add", "alice", share.host, "", "{}", alice.id, bob.id)])
    store.record_seen("lab.relay.example.com", client="127.0.0.1")
    store.put_live("lab.relay.example.com", alice.id, "127.0.0.1", time.time())  # not data: not copied
    store.close()
    hostkey.load_or_create(path)
    return path


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]


def test_migrate_copies_every_table_and_the_host_key(data_dir: Path, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    source = Store.open(data_dir)
    want = {t: int(source.engine.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
    source.close()
    code, out = invoke("store", "migrate", "--to", url, "--data-dir", str(data_dir), "--json")
    assert code == 0, out
    rows = json.loads(out)["rows"]
    copied = {t: n for t, n in want.items() if t not in SKIPPED}
    copied["cluster_keys"] = 1  # the host key
    assert rows == copied and all(n > 0 for t, n in rows.items() if t != "cluster_keys")
    assert _counts(url) == {**copied, "live_tunnels": 0, "nodes": 0, "sso_codes": 0}
    target = Store.connect(url)
    try:
        assert [u.name for u in target.list_users()] == ["alice", "bob"]
        assert target.list_shares()[0].user == "bob"
        newer = target.add_user("carol")  # ids go on past the copied ones
        assert newer.id > target.get_user("bob").id
        key = hostkey.shared(target)
        assert hostkey.fingerprint(key) == hostkey.fingerprint(hostkey.load_or_create(data_dir))
    finally:
        target.close()


def test_a_copied_token_signs_in_against_postgresql(tmp_path: Path, postgres: PostgresServer) -> None:
    tmp_path.chmod(0o700)
    data = tmp_path / "data"
    code, out = invoke("user", "add", "dora", "--data-dir", str(data), "--json")
    assert code == 0, out
    token = json.loads(out)["token"]
    url = postgres.new_database()
    code, out = invoke("store", "migrate", "--to", url, "--data-dir", str(data))
    assert code == 0 and "users\t1" in out, out
    target = Store.connect(url)
    try:
        found = target.verify_token(token)
        assert found is not None and found.name == "dora"
    finally:
        target.close()


def test_migrate_into_a_database_with_data_writes_nothing(data_dir: Path, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    assert invoke("store", "migrate", "--to", url, "--data-dir", str(data_dir))[0] == 0
    before = _counts(url)
    code, out = invoke("store", "migrate", "--to", url, "--data-dir", str(data_dir))
    assert code == 1 and "already holds data" in out and "users (2)" in out
    assert _counts(url) == before


def test_migrate_refuses_a_running_relay_a_missing_store_and_a_bad_url(
    data_dir: Path, tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        code, out = invoke("store", "migrate", "--to", url, "--data-dir", str(data_dir))
        assert code == 1 and "relay serve is running" in out
    finally:
        lock.release()
    code, out = invoke("store", "migrate", "--to", url, "--data-dir", str(tmp_path / "none"))
    assert code == 1 and "no store in" in out
    code, out = invoke(
        "store", "migrate", "--to", "postgresql://relay@127.0.0.1:1/x", "--data-dir", str(data_dir)
    )
    assert code == 1 and "cannot connect to postgresql://relay@127.0.0.1:1/x" in out
    with psycopg.connect(url) as conn:  # refused before connecting: not even the schema was made
        assert conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone() == (0,)


def test_admin_commands_run_against_the_cluster_store(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    code, out = invoke("user", "add", "erin", "--store", url, "--json")
    assert code == 0, out
    code, out = invoke("user", "list", "--json", env={"RELAY_STORE": url})
    assert code == 0 and [u["name"] for u in json.loads(out)["users"]] == ["erin"]
    code, out = invoke("user", "list", "--store", "postgresql://relay@127.0.0.1:1/x")
    assert code == 1 and "cannot connect" in out
    assert not (tmp_path / "data").exists()  # no data dir was made for a cluster command


NOWHERE = "postgresql://relay@127.0.0.1:1/relay"  # nothing listens on port 1
ADDRESS = "127.0.0.1:0"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--node", "n1"], "--node and --cluster-address are for a cluster"),
        (["--store", "mysql://db/relay", "--node", "n1", "--cluster-address", ADDRESS], "postgresql://"),
        (["--store", NOWHERE, "--cluster-address", ADDRESS], "--node NAME"),
        (["--store", NOWHERE, "--node", "N_1", "--cluster-address", ADDRESS], "invalid --node"),
        (["--store", NOWHERE, "--node", "n1"], "--cluster-address HOST:PORT"),
        (["--store", NOWHERE, "--node", "n1", "--cluster-address", ADDRESS], f"cannot connect to {NOWHERE}"),
    ],
)  # fmt: skip
def test_serve_refuses_a_cluster_it_cannot_join_with_a_clear_error(
    tmp_path: Path, args: list[str], says: str
) -> None:
    tmp_path.chmod(0o700)
    code, out = invoke(
        "serve", "--data-dir", str(tmp_path / "data"), "--http-port", "0", "--ssh-port", "0", *args
    )
    assert code == 1 and says in out, out


def test_a_cluster_nodes_data_dir_is_not_served_as_a_single_relay(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    tmp_path.chmod(0o700)
    data = ensure_data_dir(tmp_path / "data")
    url = postgres.new_database()
    record_store(data, url)
    code, out = invoke("serve", "--data-dir", str(data), "--http-port", "0", "--ssh-port", "0")
    assert code == 1 and "a cluster node's data dir" in out and "store.url" in out
    assert not (data / "relay.db").exists()
    code, out = invoke("user", "add", "fred", "--data-dir", str(data), "--json")  # admin commands follow it
    assert code == 0, out
    with contextlib.closing(Store.connect(url)) as store:
        assert store.get_user("fred").name == "fred"
