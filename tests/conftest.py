"""Settings shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from relay.datadir import ensure_data_dir
from relay.store import Store
from tests.pgserver import PostgresServer, shared_server

# No per-example deadline: the parsers are fast, but CI machines are shared and a slow example is
# not a failure of the rule under test. Examples per test stay at hypothesis's default (100).
settings.register_profile("relay", deadline=None)
settings.load_profile("relay")


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """One real PostgreSQL server for the whole run (started on first use, stopped at exit)."""
    return shared_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new empty store on each engine in turn: every store test runs on both."""
    if request.param == "sqlite":
        opened = Store.open(ensure_data_dir(tmp_path / "store-data"))
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = Store.connect(server.new_database())
    yield opened
    opened.close()
