"""The change feed a cluster node's caches trust: notices while listening, the database's counter
otherwise, and what is cached only for a bounded time while the database cannot be reached."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.errors import StoreError
from relay.store.changes import ChangeFeed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counter(values: list[int | None]) -> Callable[[], int]:
    """A read of the database's change counter: the next value, or an unreachable database."""

    def read() -> int:
        value = values.pop(0)
        if value is None:
            raise StoreError("postgresql://db/relay: connection refused")
        return value

    return read


def test_while_listening_only_notices_move_it_and_the_database_is_not_asked() -> None:
    feed = ChangeFeed(grace=60, clock=Clock())
    feed.up()
    first = feed.version(_counter([]))  # an empty list: never read
    assert feed.version(_counter([])) == first
    feed.notice()
    assert feed.version(_counter([])) == first + 1


@pytest.mark.parametrize(
    ("counters", "moves"),
    [
        ([5, 5], [False]),  # no commit between two lookups: caches stay
        ([5, 6], [True]),  # another node committed: caches drop
        ([5, 6, 6, 7], [True, False, True]),
    ],
)
def test_not_listening_it_follows_the_database_counter(counters: list[int], moves: list[bool]) -> None:
    feed, read = ChangeFeed(grace=60, clock=Clock()), _counter(list[int | None](counters))
    before = feed.version(read)
    for moved in moves:
        now = feed.version(read)
        assert (now != before) is moved
        before = now


def test_a_lost_listener_moves_it_at_once_and_again_when_back() -> None:
    feed = ChangeFeed(grace=60, clock=Clock())
    feed.up()
    listening = feed.version(_counter([]))
    feed.down()  # notices may be missed from now on
    away = feed.version(_counter([3]))
    assert away != listening
    feed.up()
    assert feed.version(_counter([])) != away


def test_an_unreachable_database_keeps_the_cache_for_the_grace_then_fails() -> None:
    clock = Clock()
    feed = ChangeFeed(grace=60, clock=clock)
    cached = feed.version(_counter([4]))
    clock.now += 59
    assert feed.version(_counter([None])) == cached  # still trusted
    clock.now += 2
    with pytest.raises(StoreError):
        feed.version(_counter([None]))  # past the grace: as the database
    assert feed.version(_counter([4])) == cached  # back, nothing changed
