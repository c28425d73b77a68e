from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .harness import Backend, RelayProcess, SshTunnel, open_tunnel, start_relay


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("relay")
    workdir.chmod(0o700)
    proc = start_relay(workdir)
    yield proc
    proc.stop()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


_counter = iter(range(1, 10_000))


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{next(_counter)}"


class Owned:
    """A user with a live tunnel to the test backend."""

    def __init__(self, name: str, token: str, url: str, tunnel: SshTunnel) -> None:
        self.name = name
        self.token = token
        self.url = url
        self.host = f"{name}.localhost"
        self.tunnel = tunnel


@pytest.fixture
async def owned(relay: RelayProcess, backend: Backend) -> AsyncIterator[Owned]:
    name = unique_name()
    token = relay.add_user(name)
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    yield Owned(name, token, relay.url(name), tunnel)
    await tunnel.close()
