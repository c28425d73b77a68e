"""TCP aliases (issue 14, DESIGN §3.8) with real OpenSSH on both ends: a real sshd on a loopback port
plays the Colab runtime, `ssh -R NAME:22:...` from it registers the alias (no port bound on the relay),
and `ssh -J` through the relay runs a command there and copies 64 MiB with scp, end to end. Bob, not
allowed, is refused until alice shares the host; `-W`/`-L` to anything but an alias (the relay's own
ports, loopback, a metadata address) is refused with no connection made; and closing the runtime's
client ends the jump connections through its aliases."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bench.classic import Sshd, start_sshd

from .conftest import unique_name
from .harness import (
    SSH,
    RelayProcess,
    SshTunnel,
    open_tunnel,
    run_client_once,
    ssh_args,
    ssh_exec,
    start_client,
)
from .test_dashboard import page, sign_in_relay

SCP = "scp"
#: Modern scp speaks SFTP: the runtime's sshd needs the subsystem.
RUNTIME_CONFIG = "Subsystem sftp internal-sftp\nAllowTcpForwarding no\n"


@dataclass
class Runtime:
    """The "Colab runtime": its sshd, and its `ssh -R NAME:22:...` to the relay as alice."""

    sshd: Sshd
    name: str
    owner: str
    token: str
    bob: str  # another user, not allowed on the alias until it is shared with him
    bob_token: str
    forward: SshTunnel
    config: Path  # an ssh_config naming the relay (per user) and the runtime behind it


def ssh_config(relay: RelayProcess, sshd: Sshd, workdir: Path, users: list[str]) -> Path:
    """`Host relay-USER` for each user, and `Host *` for the runtime reached through the jump."""
    known = workdir / "known_hosts"
    proxy = shlex.join(
        [sys.executable, "-m", "client", "proxy", f"ws://localhost:{relay.http_port}/_relay/ssh"]
    )
    blocks = [
        f"Host wss-{u}\n  ProxyCommand {proxy}\n  HostKeyAlias relay-{u}\n  User {u}\n"
        f"  UserKnownHostsFile {relay.workdir / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
        "  PubkeyAuthentication no\n  PasswordAuthentication yes\n  BatchMode no\n"
        "  NumberOfPasswordPrompts 1\n  LogLevel INFO\n"
        for u in users
    ] + [
        f"Host relay-{u}\n  HostName 127.0.0.1\n  Port {relay.ssh_port}\n  User {u}\n"
        f"  UserKnownHostsFile {relay.workdir / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
        "  PubkeyAuthentication no\n  PasswordAuthentication yes\n  BatchMode no\n"
        "  NumberOfPasswordPrompts 1\n  LogLevel INFO\n"
        for u in users
    ]
    blocks.append(
        f"Host *\n  User {sshd.user}\n  IdentityFile {sshd.key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n"
        "  PasswordAuthentication no\n  ConnectTimeout 15\n  LogLevel ERROR\n"
    )
    path = workdir / "ssh_config"
    path.write_text("\n".join(blocks))
    return path


def askpass_env(relay: RelayProcess, user: str, token: str) -> dict[str, str]:
    return ssh_args(relay, user, token=token)[1]


async def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        start_new_session=True,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def runtime(relay: RelayProcess, workdir: Path) -> AsyncIterator[Runtime]:
    sshd = await start_sshd(workdir / "sshd", extra_config=RUNTIME_CONFIG)
    owner, bob = unique_name("alice"), unique_name("bob")
    token, bob_token = relay.add_user(owner), relay.add_user(bob)
    name = unique_name("box")
    forward = await open_tunnel(relay, owner, f"{name}:22:127.0.0.1:{sshd.port}", token=token)
    config = ssh_config(relay, sshd, workdir, [owner, bob])
    try:
        yield Runtime(sshd, name, owner, token, bob, bob_token, forward, config)
    finally:
        await forward.close()
        sshd.stop()


def jump(rt: Runtime, user: str, target: str, *command: str) -> list[str]:
    return [SSH, "-F", str(rt.config), "-J", f"relay-{user}", target, "--", *command]


async def test_ssh_and_scp_into_the_runtime_through_its_alias(
    relay: RelayProcess, runtime: Runtime, workdir: Path
) -> None:
    rt = runtime
    line = rt.forward.stdout_lines[0]
    assert line.startswith(f"tcp {rt.name}.localhost:22: ssh -J {rt.owner}@localhost:{relay.ssh_port} ")
    env = askpass_env(relay, rt.owner, rt.token)
    for target in (rt.name, f"{rt.name}.localhost"):
        code, out, err = await run(jump(rt, rt.owner, target, "echo", "hello from", "$PPID"), env)
        assert code == 0 and out.startswith("hello from "), err

    src, dst = workdir / "big.bin", workdir / "copied.bin"
    with src.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    scp = [SCP, "-q", "-F", str(rt.config), "-J", f"relay-{rt.owner}", str(src), f"{rt.name}:{dst}"]
    code, _, err = await run(scp, env, timeout=180)
    assert code == 0, err
    digest = hashlib.sha256
    assert digest(dst.read_bytes()).hexdigest() == digest(src.read_bytes()).hexdigest()

    # Listed for its owner, with no port bound anywhere.
    code, out, _ = await ssh_exec(relay, rt.owner, ["tunnels", "--json"], token=rt.token)
    aliases = json.loads(out)["aliases"]
    assert [a["alias"] for a in aliases] == [f"{rt.name}.localhost:22"]
    assert aliases[0]["bytes_in"] >= 64 << 20
    listed = subprocess.run(
        [sys.executable, "-m", "relay", "tunnels", "--json", "--data-dir", str(relay.data_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    mine = [t for t in json.loads(listed.stdout)["tunnels"] if t["user"] == rt.owner]
    assert [t["host"] for t in mine] == [f"{rt.name}.localhost:22"]
    status, html, _ = await page(relay, await sign_in_relay(relay, rt.token))
    assert status == 200 and "Your TCP aliases" in html
    assert f"ssh -J {rt.owner}@localhost:{relay.ssh_port} USER@{rt.name}" in html


async def test_bob_is_refused_until_the_host_is_shared_with_him(
    relay: RelayProcess, runtime: Runtime
) -> None:
    rt = runtime
    bob_env = askpass_env(relay, rt.bob, rt.bob_token)
    code, out, err = await run(jump(rt, rt.bob, rt.name, "echo", "in"), bob_env)
    assert code != 0 and out == ""
    assert "administratively prohibited" in err and "not a TCP alias you may reach" in err
    share = ["share", "add", rt.name, "--with", rt.bob, "--json"]
    code, out, err = await ssh_exec(relay, rt.owner, share, token=rt.token)
    assert code == 0, err
    share_id = json.loads(out)["id"]
    code, out, err = await run(jump(rt, rt.bob, rt.name, "echo", "in"), bob_env)
    assert code == 0 and out.strip() == "in", err

    # A revoke ends bob's open jump too (rechecked every few seconds), not only his next one.
    proc = await asyncio.create_subprocess_exec(
        *jump(rt, rt.bob, rt.name, "echo", "up;", "sleep", "120"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bob_env, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"up"
    code, _, err = await ssh_exec(relay, rt.owner, ["share", "revoke", share_id], token=rt.token)
    assert code == 0, err
    await asyncio.wait_for(proc.wait(), 25)
    code, out, err = await run(jump(rt, rt.bob, rt.name, "echo", "in"), bob_env)
    assert code != 0 and "not a TCP alias you may reach" in err


@contextlib.contextmanager
def trap() -> Iterator[tuple[int, list[object]]]:
    """A loopback listener that records every connection made to it (there must be none)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    accepted: list[object] = []
    try:
        yield server.getsockname()[1], accepted
    finally:
        with contextlib.suppress(BlockingIOError):
            while True:
                accepted.append(server.accept())
        server.close()


async def test_anything_but_an_alias_is_refused_with_no_connection_made(
    relay: RelayProcess, runtime: Runtime
) -> None:
    rt = runtime
    env = askpass_env(relay, rt.owner, rt.token)
    base, _ = ssh_args(relay, rt.owner, token=rt.token)
    with trap() as (port, accepted):
        targets = [
            f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
            f"127.0.0.1:{relay.http_port}", f"localhost:{relay.ssh_port}", "169.254.169.254:80",
            f"{rt.name}:2222",  # the alias's host, another port
            f"{rt.name}.localhost.:{port}", "localhost.:22",
        ]  # fmt: skip
        for target in targets:
            code, out, err = await run([*base, "-W", target, f"{rt.owner}@127.0.0.1"], env)
            assert code != 0 and out == "", target
            assert "administratively prohibited" in err, (target, err)
        # -L the same way: the local end accepts, the relay refuses the channel, nothing connects.
        local = socket.socket()
        local.bind(("127.0.0.1", 0))
        lport = local.getsockname()[1]
        local.close()
        fwd = await asyncio.create_subprocess_exec(
            *base, "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{lport}:127.0.0.1:{port}",
            f"{rt.owner}@127.0.0.1", stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
            start_new_session=True,
        )  # fmt: skip
        try:
            reader, writer = await _connect_when_up(lport)
            assert await asyncio.wait_for(reader.read(), 15) == b""
            writer.close()
        finally:
            fwd.terminate()
            await fwd.wait()
        await asyncio.sleep(0.2)
    assert accepted == []


async def _connect_when_up(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for _ in range(100):
        with contextlib.suppress(OSError):
            return await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.1)
    raise AssertionError(f"ssh -L never listened on {port}")


async def test_alias_refusals_are_explained_on_the_session(relay: RelayProcess, runtime: Runtime) -> None:
    rt = runtime
    # Bob may not take alice's name, whatever the port; port 0 names no alias.
    code, out, err = await ssh_exec(
        relay, rt.bob, ["tunnels", "--json"], token=rt.bob_token,
        extra=["-R", f"{rt.name}:22:127.0.0.1:22", "-R", f"{rt.bob}:0:127.0.0.1:22"],
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["aliases"] == []
    notices = " ".join(doc["notices"])
    assert f"name {rt.name!r} is owned by another user" in notices
    assert "a TCP alias needs its port" in notices


async def test_closing_the_runtime_client_ends_its_jump_connections(
    relay: RelayProcess, runtime: Runtime
) -> None:
    rt = runtime
    env = askpass_env(relay, rt.owner, rt.token)
    proc = await asyncio.create_subprocess_exec(
        *jump(rt, rt.owner, rt.name, "echo", "up;", "sleep", "120"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"up"
    rt.forward.kill()
    await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode != 0
    code, out, _ = await ssh_exec(relay, rt.owner, ["tunnels", "--json"], token=rt.token)
    assert code == 0 and json.loads(out)["aliases"] == []


async def test_relay_client_publishes_a_tcp_alias(
    relay: RelayProcess, runtime: Runtime, workdir: Path
) -> None:
    rt = runtime
    home = workdir / "client-home"
    home.mkdir(mode=0o700)
    name = unique_name("cbox")
    client = await start_client(
        relay, home, ["--user", rt.owner, "--tcp", f"{name}:22:{rt.sshd.port}"], env={"RELAY_TOKEN": rt.token}
    )
    try:
        assert client.url == f"{name}.localhost:22"
        env = askpass_env(relay, rt.owner, rt.token)
        code, out, err = await run(jump(rt, rt.owner, name, "echo", "via relay-client"), env)
        assert code == 0 and out.strip() == "via relay-client", err
    finally:
        await client.stop()
    code, _, bad = await run_client_once(relay.ssh_port, home, ["--user", rt.owner, "--tcp", f"{name}:80:22"])
    assert code != 0 and b"not 80 or 443" in bad


async def test_the_jump_host_over_websocket_with_ssh_and_sftp(
    relay: RelayProcess, runtime: Runtime, workdir: Path
) -> None:
    """``relay-client proxy`` as the jump host's ProxyCommand: ssh -J and sftp through it, for
    networks where only the relay's HTTPS port is reachable."""
    rt = runtime
    env = askpass_env(relay, rt.owner, rt.token)
    code, out, err = await run(
        [SSH, "-F", str(rt.config), "-J", f"wss-{rt.owner}", rt.name, "--", "echo", "ws"], env
    )
    assert code == 0 and out.strip() == "ws", err
    src = workdir / "small.bin"
    src.write_bytes(os.urandom(300_000))
    batch = workdir / "batch"
    batch.write_text(f"put {src} {workdir / 'sftp-copy.bin'}\n")
    sftp = ["sftp", "-q", "-F", str(rt.config), "-J", f"wss-{rt.owner}", "-b", str(batch), rt.name]
    code, _, err = await run(sftp, env, timeout=90)
    assert code == 0, err
    assert (workdir / "sftp-copy.bin").read_bytes() == src.read_bytes()
