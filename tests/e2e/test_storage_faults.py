"""Storage faults at start-up and under contention: a corrupt or exposed store or host key stops
``relay serve`` with a message naming the file and leaves it untouched; a busy store is waited for,
and while another process holds it, only the requests that must write wait."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from relay.datadir import DB_FILE, HOST_KEY_FILE
from relay.store import Store

from .conftest import unique_name
from .harness import Backend, fetch, open_tunnel, serve_argv, start_relay


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


HOLD = 10.0  # seconds the other process holds the database


async def test_a_store_locked_by_another_process_stalls_only_the_requests_that_write(workdir: Path) -> None:
    """A second process holds ``BEGIN EXCLUSIVE`` for 10 s (an admin command, a backup). Visitors that
    need no write keep their latency, a tunnel can still come up on a name already owned, and a
    sign-in (a session to write) waits for the lock alone, then succeeds."""
    relay = start_relay(workdir)
    backend = Backend()
    await backend.start()
    name = unique_name("lock")
    token = relay.add_user(name)
    host = f"{name}.localhost"
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    holder = None
    try:
        assert (await fetch(relay, host, "/echo", headers={"X-Relay-Token": token})).status == 200
        await tunnel.close()  # reopened during the hold: its name is owned, nothing to claim
        script = (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({HOLD})\n"
            "db.execute('COMMIT')\n"
        )
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, str(relay.data_dir / DB_FILE), stdout=asyncio.subprocess.PIPE
        )
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"locked\n"
        locked_at = time.monotonic()
        tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
        assert time.monotonic() - locked_at < 2, "the tunnel waited for the store"
        sign_in = asyncio.ensure_future(fetch(relay, host, f"/echo?relay_token={token}"))
        slowest, served = 0.0, 0
        while time.monotonic() - locked_at < HOLD - 1:
            started = time.monotonic()
            reply = await fetch(relay, host, "/echo", headers={"X-Relay-Token": token})
            slowest = max(slowest, time.monotonic() - started)
            assert reply.status == 200
            assert not sign_in.done(), "the sign-in wrote while the database was locked"
            served += 1
        assert served >= 20 and slowest < 1.0, f"{served} requests, the slowest waited {slowest:.1f} s"
        signed_in = await asyncio.wait_for(sign_in, 30)
        assert signed_in.status == 303 and any(c.startswith("relay_session=") for c in signed_in.set_cookies)
        assert time.monotonic() - locked_at >= HOLD - 1
        assert await holder.wait() == 0
    finally:
        if holder is not None and holder.returncode is None:
            holder.kill()
        await tunnel.close()
        await backend.stop()
        relay.stop()
