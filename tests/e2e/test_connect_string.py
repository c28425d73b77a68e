"""One secret (issue 14, first part), with a real relay and the real client: `relay user add` and
`relay token create` print the connect string; `relay-client connect` with only RELAY_URL set (or
`--relay relay://...`) opens the tunnel, with the host key pinned before the first connection (no
trust on first use); a connect string naming another key is refused as loudly as a changed pin."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from client.config import parse_connect_string

from .conftest import unique_name
from .harness import Backend, RelayProcess, client_env, fetch


def admin(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args, "--data-dir", str(relay.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


async def connect(home: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "connect", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**client_env(home), **env}, start_new_session=True,
    )  # fmt: skip


async def stop(proc: asyncio.subprocess.Process) -> bytes:
    if proc.returncode is None:
        proc.terminate()
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    return err


async def test_the_one_secret_opens_a_tunnel_with_the_key_pinned_up_front(
    relay: RelayProcess, backend: Backend, workdir: Path
) -> None:
    name = unique_name("one")
    added = admin(relay, "user", "add", name, "--json")
    assert added.returncode == 0, added.stderr
    doc = json.loads(added.stdout)
    one = parse_connect_string(doc["connect"])
    assert (one.user, one.token, one.host, one.port, one.fingerprint) == (
        name, doc["token"], "localhost", relay.ssh_port, relay.fingerprint,
    )  # fmt: skip
    text = admin(relay, "token", "create", name)
    assert text.returncode == 0 and f"relay://{name}:rly_" in text.stdout and relay.fingerprint in text.stdout

    home = workdir / "fresh"
    home.mkdir(mode=0o700)
    proc = await connect(home, {"RELAY_URL": doc["connect"]}, "--port", str(backend.port))
    await serves_pinned(relay, proc, home, name, doc["token"])


async def serves_pinned(
    relay: RelayProcess, proc: asyncio.subprocess.Process, home: Path, name: str, token: str
) -> None:
    """The client prints its URL, the tunnel serves, and the key was pinned from the connect string,
    before the first connection (never "trusted on first use")."""
    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
    try:
        assert url == relay.url(name)
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200
    finally:
        err = await stop(proc)
    assert b"first use" not in err
    pins = json.loads((home / "known_relays.json").read_text())
    assert pins == {f"localhost:{relay.ssh_port}": relay.fingerprint}


async def test_a_connect_string_naming_another_key_is_refused(
    relay: RelayProcess, backend: Backend, workdir: Path
) -> None:
    name = unique_name("mitm")
    doc = json.loads(admin(relay, "user", "add", name, "--json").stdout)
    forged = doc["connect"].rsplit("#", 1)[0] + "#SHA256:" + "A" * 43
    home = workdir / "fresh"
    home.mkdir(mode=0o700)
    proc = await connect(home, {}, "--relay", forged, "--port", str(backend.port))
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and out == b""
    assert b"man-in-the-middle" in err and relay.fingerprint.encode() in err
    assert doc["token"].encode() not in err  # the secret is never echoed


async def test_a_malformed_connect_string_says_which_part(workdir: Path) -> None:
    proc = await connect(workdir, {"RELAY_URL": "relay://alice@localhost:2222"}, "--port", "8000")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0 and b"token is missing or malformed" in err
