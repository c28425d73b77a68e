"""relay.storewriter: store writes in one thread with its own connection, in order, off the loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from functools import partial
from pathlib import Path

import pytest

from relay.datadir import DB_FILE, ensure_data_dir
from relay.errors import StoreError
from relay.store import Store
from relay.storewriter import StoreWriter


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = ensure_data_dir(tmp_path / "data")
    Store.open(path).close()
    return path


async def test_writes_run_in_order_in_another_thread_and_the_loop_sees_them(data_dir: Path) -> None:
    store, writer = Store.open(data_dir), StoreWriter(data_dir)
    threads: list[str] = []

    def where(store: Store) -> None:
        threads.append(threading.current_thread().name)

    try:
        writer.submit(lambda s: s.add_user("first"), "add first")
        writer.submit(where, "where")
        user = await writer.run(lambda s: s.add_user("second"))
        assert [u.name for u in store.list_users()] == ["first", "second"] and user.name == "second"
        assert threads and threads[0].startswith("store-writer")
    finally:
        writer.close()
        store.close()


async def test_a_locked_store_delays_the_write_but_not_the_loop(data_dir: Path) -> None:
    writer = StoreWriter(data_dir)
    blocker = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        write = asyncio.ensure_future(writer.run(lambda s: s.add_user("late")))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the write waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not write.done()
        blocker.execute("COMMIT")
        assert (await asyncio.wait_for(write, 15)).name == "late"
    finally:
        blocker.close()
        writer.close()


async def test_a_failed_queued_write_is_logged_and_the_next_one_runs(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = StoreWriter(data_dir)

    def fail(store: Store) -> None:
        raise StoreError("disk full")

    try:
        with caplog.at_level(logging.WARNING):
            writer.submit(fail, "put_live")
            assert (await writer.run(lambda s: s.add_user("after"))).name == "after"
        assert any(
            "store.write_failed" in r.getMessage() and "put_live" in r.getMessage() for r in caplog.records
        )
    finally:
        writer.close()


def test_close_finishes_what_was_queued(data_dir: Path) -> None:
    writer = StoreWriter(data_dir)
    for n in range(50):
        writer.submit(partial(Store.add_user, name=f"u{n}"), "add")
    writer.close()
    store = Store.open(data_dir)
    assert len(store.list_users()) == 50
    store.close()
