"""Open WebSockets are re-checked: closed once refused, kept while the store cannot answer."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial

from relay.proxy.upgrades import OpenUpgrades


def test_recheck_closes_only_what_lost_its_access() -> None:
    upgrades, closed = OpenUpgrades(), list[str]()
    allowed = {"a": True, "b": False}
    for name in allowed:
        upgrades.add(partial(allowed.__getitem__, name), partial(closed.append, name), f"{name}.x")
    assert asyncio.run(upgrades.recheck()) == 1 and closed == ["b"] and len(upgrades) == 1
    allowed["a"] = False
    assert asyncio.run(upgrades.recheck()) == 1 and closed == ["b", "a"] and len(upgrades) == 0


def test_a_store_that_cannot_answer_closes_nothing() -> None:
    upgrades, closed = OpenUpgrades(), list[str]()

    def broken() -> bool:
        raise sqlite3.OperationalError("database is locked")

    upgrades.add(broken, lambda: closed.append("x"), "x.x")
    assert asyncio.run(upgrades.recheck()) == 0 and closed == [] and len(upgrades) == 1


def test_a_finished_upgrade_is_forgotten() -> None:
    upgrades = OpenUpgrades()
    key = upgrades.add(lambda: False, lambda: None, "x.x")
    upgrades.discard(key)
    assert asyncio.run(upgrades.recheck()) == 0
