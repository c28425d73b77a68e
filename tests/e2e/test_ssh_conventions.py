"""The SSH conventions of DESIGN §3.2, driven with the real OpenSSH client."""

from __future__ import annotations

import asyncio
import json
import socket

from .conftest import Owned, unique_name
from .harness import Backend, RelayProcess, fetch, open_tunnel, ssh_args, ssh_exec


async def test_key_auth_and_default_name(relay: RelayProcess, backend: Backend) -> None:
    name = unique_name("key")
    token = relay.add_user(name)
    key = relay.add_key(name)
    tunnel = await open_tunnel(relay, name, f"80:127.0.0.1:{backend.port}", key=key)
    try:
        assert tunnel.stdout_lines == [relay.url(name)]
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200
    finally:
        await tunnel.close()


async def test_wrong_token_cannot_log_in(relay: RelayProcess, owned: Owned) -> None:
    code, _, err = await ssh_exec(relay, owned.name, ["tunnels"], token="rly_0123456789_wrong")
    assert code == 255 and "Permission denied" in err
    # A valid token of another user does not log in as this one.
    other = relay.add_user(unique_name("other"))
    code, _, err = await ssh_exec(relay, owned.name, ["tunnels"], token=other)
    assert code == 255 and "Permission denied" in err


async def test_tunnels_json_returns_the_url(relay: RelayProcess, owned: Owned) -> None:
    code, out, _ = await ssh_exec(relay, owned.name, ["tunnels", "--json"], token=owned.token)
    assert code == 0
    doc = json.loads(out)
    assert doc["user"] == owned.name
    assert [t["url"] for t in doc["tunnels"]] == [owned.url]
    assert doc["tunnels"][0]["this_connection"] is False


async def test_other_commands_and_shell_features_are_refused(relay: RelayProcess, owned: Owned) -> None:
    code, out, err = await ssh_exec(relay, owned.name, ["cat", "/etc/passwd"], token=owned.token)
    assert code == 2 and out == "" and "runs no programs" in err
    code, _, err = await ssh_exec(relay, owned.name, [], token=owned.token, extra=["-s", "sftp"])
    assert code != 0


async def test_another_user_cannot_take_a_name(relay: RelayProcess, backend: Backend, owned: Owned) -> None:
    thief = unique_name("thief")
    token = relay.add_user(thief)
    args, env = ssh_args(relay, thief, token=token)
    proc = await asyncio.create_subprocess_exec(
        *args,
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        f"{owned.name}:80:127.0.0.1:{backend.port}",
        f"{thief}@127.0.0.1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 255
    assert b"remote port forwarding failed" in err
    # The owner's tunnel is untouched.
    reply = await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token})
    assert reply.status == 200
    # Without ExitOnForwardFailure, the session tells the person why.
    tunnel = await open_tunnel(
        relay, thief, f"{owned.name}:80:127.0.0.1:{backend.port}", token=token, expect_url=False
    )
    assert tunnel.proc.stderr is not None
    line = await asyncio.wait_for(tunnel.proc.stderr.readline(), 15)
    while b"refused" not in line:
        line = await asyncio.wait_for(tunnel.proc.stderr.readline(), 15)
    assert b"owned by another user" in line
    await tunnel.close()


async def test_reserved_and_invalid_names_and_ports(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    for spec, reason in (
        (f"www:80:127.0.0.1:{backend.port}", b"reserved"),
        (f"Bad_Name:80:127.0.0.1:{backend.port}", b"invalid name"),
        (f"xn--abc:80:127.0.0.1:{backend.port}", b"punycode"),
        # Another port makes a TCP alias, named by its port: 0 (a port the server picks) names none.
        (f"{owned.name}:0:127.0.0.1:{backend.port}", b"a TCP alias needs its port"),
    ):
        tunnel = await open_tunnel(relay, owned.name, spec, token=owned.token, expect_url=False)
        assert tunnel.proc.stderr is not None
        text = b""
        while b"no tunnel on this connection" not in text:
            line = await asyncio.wait_for(tunnel.proc.stderr.readline(), 15)
            assert line, text
            text += line
        assert reason in text, (spec, text)
        await tunnel.close()


async def test_reconnecting_owner_takes_over_at_once(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    second = await open_tunnel(
        relay, owned.name, f"{owned.name}:80:127.0.0.1:{backend.port}", token=owned.token
    )
    try:
        assert second.stdout_lines == [owned.url]
        assert owned.tunnel.proc.stderr is not None
        line = await asyncio.wait_for(owned.tunnel.proc.stderr.readline(), 10)
        while b"taken over" not in line:
            line = await asyncio.wait_for(owned.tunnel.proc.stderr.readline(), 10)
        code, out, _ = await ssh_exec(relay, owned.name, ["tunnels", "--json"], token=owned.token)
        assert code == 0
        assert len(json.loads(out)["tunnels"]) == 1
        # Closing the displaced connection does not take the new tunnel down.
        await owned.tunnel.close()
        reply = await fetch(relay, owned.host, "/echo", headers={"X-Relay-Token": owned.token})
        assert reply.status == 200
    finally:
        await second.close()


async def test_local_and_dynamic_forwarding_are_refused(
    relay: RelayProcess, backend: Backend, owned: Owned
) -> None:
    for flag in (["-L", f"0:127.0.0.1:{backend.port}"], ["-D", "0"], ["-W", f"127.0.0.1:{backend.port}"]):
        if flag[0] == "-W":
            code, _, err = await ssh_exec(relay, owned.name, [], token=owned.token, extra=flag)
            assert code != 0 and ("refused" in err or "failed" in err), err
            continue
        # Bind a free local port for -L/-D and try to use it.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        spec = f"{port}:127.0.0.1:{backend.port}" if flag[0] == "-L" else str(port)
        args, env = ssh_args(relay, owned.name, token=owned.token)
        proc = await asyncio.create_subprocess_exec(
            *args,
            "-N",
            flag[0],
            spec,
            f"{owned.name}@127.0.0.1",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            for _ in range(100):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("ssh did not listen")
            try:
                if flag[0] == "-D":  # SOCKS5 greeting, then CONNECT to the backend
                    writer.write(b"\x05\x01\x00")
                    await reader.readexactly(2)
                    writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + backend.port.to_bytes(2, "big"))
                else:
                    writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
                data = await asyncio.wait_for(reader.read(), 10)
            except ConnectionResetError:  # ssh drops the local side when the relay refuses
                data = b""
            assert b"HTTP/1" not in data
            if flag[0] == "-D":
                assert data[:2] != b"\x05\x00"  # SOCKS reply is not "succeeded"
            writer.close()
        finally:
            proc.terminate()
            await proc.wait()
    assert backend.seen == []
