"""The live request inspector's text form (issue 13), with real OpenSSH clients: the person who typed
``ssh -tt -R`` sees each request of their tunnel; ``ssh USER@relay -- log HOST`` shows the last
requests and follows new ones; ``-N`` stays silent; secrets in a query are never shown; nobody follows
another user's host."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess

from .conftest import Owned, unique_name
from .harness import Backend, RelayProcess, fetch, open_tunnel, ssh_args, ssh_exec

LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+ )?GET (\S+) (\d{3}) \d+ms \S+B (\S+)$")


async def read_lines(stream: asyncio.StreamReader, count: int, timeout: float = 10) -> list[str]:
    lines: list[str] = []

    async def read() -> None:
        while len(lines) < count:
            raw = await stream.readline()
            if not raw:
                break
            text = raw.decode().strip()
            if LINE.match(text):
                lines.append(text)

    await asyncio.wait_for(read(), timeout)
    return lines


async def test_an_interactive_ssh_session_prints_each_request(relay: RelayProcess, backend: Backend) -> None:
    name = unique_name("tty")
    token = relay.add_user(name)
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token, extra=["-tt"])
    try:
        assert tunnel.proc.stdout is not None
        for path in ("/echo?a=1", "/echo?token=s3cret&next=rly_0123456789_s3cret2", "/echo/<script>"):
            reply = await fetch(relay, f"{name}.localhost", path, headers={"X-Relay-Token": token})
            assert reply.status == 200
        lines = await read_lines(tunnel.proc.stdout, 3)
        assert len(lines) == 3, lines
        paths = [LINE.match(line)[2] for line in lines]  # type: ignore[index]
        assert paths[0] == "/echo?a=1"
        assert "s3cret" not in lines[1] and lines[1].count("[redacted]") == 2
        assert all(line.endswith(f" {name}") for line in lines)  # the visitor
    finally:
        await tunnel.close()


async def test_log_host_replays_then_follows(relay: RelayProcess, owned: Owned) -> None:
    await fetch(relay, owned.host, "/echo?before=1", headers={"X-Relay-Token": owned.token})
    args, env = ssh_args(relay, owned.name, token=owned.token)
    proc = await asyncio.create_subprocess_exec(
        *args, f"{owned.name}@127.0.0.1", "--", "log", owned.name,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        [replayed] = await read_lines(proc.stdout, 1)
        assert "/echo?before=1 200" in replayed
        await fetch(relay, owned.host, "/echo?after=1", headers={"X-Relay-Token": owned.token})
        [followed] = await read_lines(proc.stdout, 1)
        assert "/echo?after=1 200" in followed and followed.endswith(owned.name)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def test_minus_n_is_silent_and_nobody_follows_another_users_host(
    relay: RelayProcess, owned: Owned, backend: Backend
) -> None:
    name = unique_name("quiet")
    token = relay.add_user(name)
    quiet = await open_tunnel(
        relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token, extra=["-N"], expect_url=False
    )
    try:
        for _ in range(50):
            reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
            if reply.status == 200:
                break
            await asyncio.sleep(0.1)
        assert reply.status == 200
        assert quiet.proc.stdout is not None
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            assert await asyncio.wait_for(quiet.proc.stdout.read(1), 1) == b""
    finally:
        await quiet.close()
    code, _, err = await ssh_exec(relay, name, ["log", owned.name], token=token)
    assert code == 1 and "not yours" in err
    code, _, err = await ssh_exec(relay, name, ["log", "a", "b"], token=token)
    assert code == 2 and "usage: log" in err
