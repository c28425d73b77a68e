"""SSH over WebSocket (issue 14, DESIGN §3.8), with the real relay, the real client and stock OpenSSH:
`relay-client connect --transport wss` opens a tunnel over `/_relay/ssh`; with the SSH port closed,
`--transport auto` falls back to it and prints the URL; stock `ssh` with `ProxyCommand=relay-client
proxy wss://...` over the relay's own TLS port opens an HTTP tunnel that serves a request. A WebSocket
that sends text or oversized frames is closed with the RFC's code, and WebSockets that never log in
count against the same per-address cap as the SSH port's."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from .conftest import unique_name
from .harness import (
    Backend,
    RelayProcess,
    client_env,
    fetch,
    open_tunnel,
    ssh_args,
    start_client,
    start_relay,
)
from .test_https import self_signed


def ws_url(relay: RelayProcess) -> str:
    return f"ws://localhost:{relay.http_port}/_relay/ssh"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_over_websocket_opens_the_tunnel(
    relay: RelayProcess, backend: Backend, workdir: Path
) -> None:
    name = unique_name("ws")
    token = relay.add_user(name)
    env = {"RELAY_TOKEN": token}
    client = await start_client(
        relay, workdir, ["--user", name, "--port", str(backend.port), "--transport", "wss",
                         "--wss", ws_url(relay), "--host-key", relay.fingerprint], env=env,
    )  # fmt: skip
    try:
        assert client.url == relay.url(name)
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200
        big = await fetch(
            relay, f"{name}.localhost", "/download?size=3000000", headers={"X-Relay-Token": token}
        )
        assert big.status == 200 and len(big.body) == 3_000_000
    finally:
        await client.stop()


async def test_auto_falls_back_to_websocket_when_the_ssh_port_is_closed(
    relay: RelayProcess, backend: Backend, workdir: Path
) -> None:
    name = unique_name("auto")
    token = relay.add_user(name)
    port = closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "connect", "--relay", f"127.0.0.1:{port}", "--user", name,
        "--port", str(backend.port), "--wss", ws_url(relay), "--host-key", relay.fingerprint,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**client_env(workdir), "RELAY_TOKEN": token}, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert url == relay.url(name)
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    text = err.decode()
    assert f"the SSH port 127.0.0.1:{port} did not answer" in text and "trying SSH over WebSocket" in text


async def test_stock_ssh_with_the_proxy_command_over_tls(workdir: Path, backend: Backend) -> None:
    name = unique_name("pc")
    cert, key = self_signed(workdir, ["localhost", f"{name}.localhost"])
    relay = start_relay(workdir, extra=["--https-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        line = next(line for line in relay.output if "HTTPS on" in line)
        https_port = int(line.split("HTTPS on ")[1].split(",")[0].rsplit(":", 1)[1])
        token = relay.add_user(name)
        proxy = shlex.join(
            [sys.executable, "-m", "client", "proxy", f"wss://localhost:{https_port}/_relay/ssh"]
        )
        os.environ["SSL_CERT_FILE"] = str(cert)  # the proxy trusts the test's own certificate
        try:
            tunnel = await open_tunnel(
                relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token,
                extra=["-o", f"ProxyCommand={proxy}"],
            )  # fmt: skip
        finally:
            del os.environ["SSL_CERT_FILE"]
        try:
            assert tunnel.stdout_lines == [f"https://{name}.localhost:{https_port}"]
            doc = await _https_echo(cert, https_port, name, token)  # served through the wss connection
            assert doc["path"] == "/echo"
        finally:
            await tunnel.close()
    finally:
        relay.stop()


async def _https_echo(cert: Path, port: int, name: str, token: str) -> dict[str, object]:
    import ssl

    from .test_https import LoopbackResolver

    context = ssl.create_default_context(cafile=str(cert))
    connector = aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"https://{name}.localhost:{port}/echo"
        async with session.get(url, headers={"X-Relay-Token": token}) as resp:
            assert resp.status == 200
            doc = await resp.json()
            assert isinstance(doc, dict)
            return doc


async def _ws(relay: RelayProcess, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse[bool]:
    return await session.ws_connect(ws_url(relay), max_msg_size=0)


async def test_text_and_oversized_frames_are_refused(relay: RelayProcess) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await _ws(relay, session)
        banner = await asyncio.wait_for(ws.receive(), 10)
        assert banner.type is aiohttp.WSMsgType.BINARY and banner.data.startswith(b"SSH-2.0-Relay")
        await ws.send_str("SSH-2.0-hello\r\n")
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1003

        ws = await _ws(relay, session)
        await ws.send_bytes(b"x" * (256 * 1024 + 1))
        while (msg := await asyncio.wait_for(ws.receive(), 10)).type is aiohttp.WSMsgType.BINARY:
            pass
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009

    # Not a WebSocket at all: a clear refusal, nothing opened.
    plain = await fetch(relay, "localhost", "/_relay/ssh")
    assert plain.status == 426 and b"WebSocket" in plain.body


@pytest.mark.timeout(120)
async def test_websockets_that_never_log_in_count_against_the_per_address_cap(workdir: Path) -> None:
    relay = start_relay(workdir, extra=["--limit", "ssh_max_unauthenticated_per_address=3"])
    try:
        async with aiohttp.ClientSession() as session:
            held = [await _ws(relay, session) for _ in range(3)]
            for ws in held:  # each got the SSH banner: admitted, and now idle before logging in
                first = await asyncio.wait_for(ws.receive(), 10)
                assert first.type is aiohttp.WSMsgType.BINARY
            extra = await _ws(relay, session)
            msg = await asyncio.wait_for(extra.receive(), 10)
            # Refused before any SSH byte (no banner), cut like a connection to the port.
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            # The same cap on the SSH port itself, for the same address: already full.
            args, env = ssh_args(relay, "nobody", token="rly_x")
            proc = await asyncio.create_subprocess_exec(
                *args, "nobody@127.0.0.1", "true", stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 255 and b"Permission denied" not in err
            for ws in held:
                await ws.close()
    finally:
        relay.stop()
