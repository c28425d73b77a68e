"""Routing's reads on PostgreSQL (relay.storereads.StoreReads.cached_first): answered on the event
loop while the caches hold the answer, in a reader thread otherwise — and never a stale answer, with
the change listener up (its notices drop the caches) or down (every answer then asks the database)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from relay.store import Store
from relay.store.changes import ChangeFeed, listen
from relay.store.postgres import OnLoop, PostgresEngine, connect_string
from relay.storereads import StoreReads
from tests.pgserver import PostgresServer


@dataclass
class Node:
    store: Store  # the node's store, its loop guarded as in a running relay
    other: Store  # another node's, writing to the same database
    reads: StoreReads
    feed: ChangeFeed
    url: str

    async def verify(self, token: str) -> tuple[bool, bool]:
        """(the token is valid, the answer came from the loop's thread)."""
        loop_thread = threading.get_ident()
        where: list[int] = []

        def work() -> bool:
            where.append(threading.get_ident())
            return self.store.verify_token(token) is not None

        valid = await self.reads.cached_first(work)
        return valid, where[-1] == loop_thread


@pytest.fixture
async def node(postgres: PostgresServer) -> AsyncIterator[Node]:
    url = postgres.new_database()
    store, other = Store.connect(url), Store.connect(url)
    engine = store.engine
    assert isinstance(engine, PostgresEngine)
    engine.feed = feed = ChangeFeed(grace=60)
    reads = StoreReads(store)
    reads.guard_loop()
    yield Node(store, other, reads, feed, url)
    reads.close()
    await asyncio.to_thread(store.close)
    other.close()


async def _listening(node: Node) -> asyncio.Task[None]:
    task = asyncio.create_task(listen(connect_string(node.url), node.feed))
    while not node.feed.listening:
        await asyncio.sleep(0.01)
    return task


async def test_a_cached_answer_comes_from_the_loop_and_a_revocation_is_seen(node: Node) -> None:
    listening = await _listening(node)
    try:
        node.other.add_user("alice")
        info, token = node.other.create_token("alice")
        assert await node.verify(token) == (True, False)  # not cached yet: a reader thread asks
        # Cached: answered on the loop (once the notices of the writes above have come and gone).
        for _ in range(100):
            if await node.verify(token) == (True, True):
                break
            await asyncio.sleep(0.01)
        assert await node.verify(token) == (True, True)
        node.other.revoke_token(info.id)  # another node's write: its NOTIFY drops the caches
        for _ in range(100):
            valid, _ = await node.verify(token)
            if not valid:
                break
            await asyncio.sleep(0.01)
        assert await node.verify(token) == (False, False)  # refused, by the database (never cached)
        assert await node.verify(token) == (False, False)
    finally:
        listening.cancel()


async def test_without_the_listener_every_answer_asks_the_database(node: Node) -> None:
    node.other.add_user("bob")
    info, token = node.other.create_token("bob")
    assert not node.feed.listening
    assert await node.verify(token) == (True, False)
    assert await node.verify(token) == (True, False)  # the cache's freshness needs the database
    node.other.revoke_token(info.id)
    assert await node.verify(token) == (False, False)  # seen at once, not served from the cache


async def test_the_loop_is_guarded_again_after_a_cached_attempt(node: Node) -> None:
    node.other.add_user("carol")
    assert (await node.reads.cached_first(lambda: node.store.get_user("carol"))).name == "carol"
    with pytest.raises(OnLoop):  # outside cached_first a query on the loop is the bug it always was
        node.store.get_user("carol")
