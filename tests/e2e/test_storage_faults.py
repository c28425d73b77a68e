"""Storage faults at start-up and under contention: a corrupt or exposed store or host key stops
``relay serve`` with a message naming the file and leaves it untouched; a busy store is waited for."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from relay.datadir import DB_FILE, HOST_KEY_FILE
from relay.store import Store

from .harness import serve_argv, start_relay


def serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(serve_argv(data_dir), capture_output=True, text=True, timeout=60)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_start(workdir: Path) -> Path:
    relay = start_relay(workdir)
    relay.stop()
    return relay.data_dir


def test_corrupt_store_stops_the_relay_and_is_left_untouched(workdir: Path) -> None:
    data_dir = first_start(workdir)
    db = data_dir / DB_FILE
    raw = bytearray(db.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page, keep the header
    db.write_bytes(bytes(raw))
    before = digest(db)
    result = serve_once(data_dir)
    assert result.returncode != 0
    assert str(db) in result.stderr and "backup" in result.stderr
    assert digest(db) == before  # never recreated or truncated


def test_store_or_host_key_readable_by_others_is_refused_by_name(workdir: Path) -> None:
    data_dir = first_start(workdir)
    for name in (DB_FILE, HOST_KEY_FILE):
        path = data_dir / name
        path.chmod(0o644)
        result = serve_once(data_dir)
        assert result.returncode != 0
        assert str(path) in result.stderr and "chmod 600" in result.stderr
        path.chmod(0o600)


def test_a_busy_store_is_waited_for(workdir: Path) -> None:
    data_dir = first_start(workdir)
    store = Store.open(data_dir)
    store.add_user("busy1")
    blocker = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a while
    released = threading.Timer(1.0, blocker.execute, args=("COMMIT",))
    released.start()
    started = time.monotonic()
    try:
        store.add_user("busy2")  # waits for the lock instead of failing with "database is locked"
    finally:
        released.join()
        blocker.close()
    assert time.monotonic() - started >= 0.5
    assert {u.name for u in store.list_users()} >= {"busy1", "busy2"}
    store.close()
