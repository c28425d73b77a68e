"""relay-client against the real relay: a port tunnel, JupyterLab with REST and kernel WebSocket,
reconnect after a relay restart, host-key pinning, and the Python API from a plain process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp

from .conftest import unique_name
from .harness import Backend, RelayProcess, client_env, fetch, run_client_once, start_client, start_relay


async def test_port_tunnel_prints_url_and_serves(
    relay: RelayProcess, backend: Backend, workdir: Path
) -> None:
    name = unique_name("cli")
    token = relay.add_user(name)
    client = await start_client(
        relay, workdir, ["--user", name, "--token", token, "--port", str(backend.port)]
    )
    try:
        assert client.url == relay.url(name)
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200
        named = await start_client(
            relay,
            workdir,
            ["--user", name, "--token", token, "--name", f"{name}b", "--port", str(backend.port), "--json"],
        )
        assert json.loads(named.url)["url"] == relay.url(f"{name}b")
        assert await named.stop() == 0
    finally:
        assert await client.stop() == 0
    # Credentials were not saved by connect; the host key was pinned.
    pins = json.loads((workdir / "known_relays.json").read_text())
    assert pins == {f"127.0.0.1:{relay.ssh_port}": relay.fingerprint}
    assert (workdir / "known_relays.json").stat().st_mode & 0o077 == 0


async def test_refused_name_is_a_clear_error(relay: RelayProcess, backend: Backend, workdir: Path) -> None:
    owner = unique_name("own")
    relay.add_user(owner)
    other = unique_name("oth")
    token = relay.add_user(other)
    code, out, err = await run_client_once(
        relay.ssh_port,
        workdir,
        ["--user", other, "--token", token, "--name", owner, "--port", str(backend.port)],
    )
    assert code == 1 and out == b""
    assert b"owned by another user" in err


async def test_changed_host_key_is_refused(workdir: Path, backend: Backend) -> None:
    (workdir / "a").mkdir(mode=0o700)
    first = start_relay(workdir / "a")
    name = "pin"
    token = first.add_user(name)
    client = await start_client(
        first, workdir, ["--user", name, "--token", token, "--port", str(backend.port)]
    )
    assert await client.stop() == 0
    http_port, ssh_port = first.http_port, first.ssh_port
    assert first.stop() == 0
    (workdir / "b").mkdir(mode=0o700)
    impostor = start_relay(workdir / "b", http_port=http_port, ssh_port=ssh_port)
    try:
        assert impostor.fingerprint != first.fingerprint
        token_b = impostor.add_user(name)
        code, out, err = await run_client_once(
            ssh_port, workdir, ["--user", name, "--token", token_b, "--port", str(backend.port)]
        )
        assert code == 1 and out == b""
        assert b"man-in-the-middle" in err and impostor.fingerprint.encode() in err
        # An explicit --host-key that does not match is refused as well, even with no pin stored.
        code, _, err = await run_client_once(
            ssh_port,
            workdir / "b",
            [
                "--user",
                name,
                "--token",
                token_b,
                "--port",
                str(backend.port),
                "--host-key",
                first.fingerprint,
            ],
        )
        assert code == 1 and b"man-in-the-middle" in err
    finally:
        impostor.stop()


async def test_reconnects_to_the_same_url_after_relay_restart(workdir: Path, backend: Backend) -> None:
    (workdir / "r").mkdir(mode=0o700)
    relay = start_relay(workdir / "r")
    name = "again"
    token = relay.add_user(name)
    client = await start_client(
        relay, workdir, ["--user", name, "--token", token, "--port", str(backend.port)]
    )
    try:
        assert client.url == relay.url(name)
        assert relay.stop() == 0
        await client.stderr_until("retrying in")
        restarted = time.monotonic()
        relay = start_relay(workdir / "r", http_port=relay.http_port, ssh_port=relay.ssh_port)
        await client.stderr_until(f"back: {client.url}", timeout=20)
        assert time.monotonic() - restarted < 10
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        assert reply.status == 200
    finally:
        assert await client.stop() == 0
        relay.stop()


async def test_python_api_from_a_plain_process(relay: RelayProcess, backend: Backend, workdir: Path) -> None:
    name = unique_name("api")
    token = relay.add_user(name)
    script = f"""
import urllib.request
from client.notebook import connect
conn = connect(relay="127.0.0.1:{relay.ssh_port}", user="{name}", token="{token}", port={backend.port},
               quiet=True)
print(conn.url, flush=True)
req = urllib.request.Request("http://127.0.0.1:{relay.http_port}/echo?from=api",
                             headers={{"Host": "{name}.localhost", "X-Relay-Token": "{token}"}})
with urllib.request.urlopen(req, timeout=10) as resp:
    print(resp.status, flush=True)
conn.close()
print("alive" if conn.alive else "closed", flush=True)
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(workdir)
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == [relay.url(name), "200", "closed"]
    assert backend.seen[-1]["path"] == "/echo?from=api"

    async def gone() -> bool:
        reply = await fetch(relay, f"{name}.localhost", "/echo", headers={"X-Relay-Token": token})
        return reply.status == 502

    for _ in range(50):
        if await gone():
            break
        await asyncio.sleep(0.1)
    assert await gone()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Lab, and anything Lab started), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _assert_no_secret_in_argv(client_pid: int, secrets: list[str]) -> None:
    """No token on the command line of the client or of anything it started; the relay token not in
    Lab's environment either (a command line is readable by every local user)."""
    below = _descendants(client_pid)
    labs = [p for p in below if b"jupyterlab" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert labs, "no JupyterLab process under the client"
    for pid in [client_pid, *below]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        for secret in secrets:
            assert secret.encode() not in argv, (pid, argv)
    for pid in labs:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"RELAY_TOKEN=") for v in environ)
        assert f"JUPYTER_TOKEN={secrets[1]}".encode() in environ


def _lab_token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


async def test_lab_rest_and_kernel_websocket(relay: RelayProcess, workdir: Path) -> None:
    name = unique_name("lab")
    token = relay.add_user(name)
    notebooks = workdir / "notebooks"
    notebooks.mkdir()
    (notebooks / "hello.txt").write_text("hi")
    client = await start_client(
        relay,
        workdir,
        ["--user", name, "--lab", "--notebook-dir", str(notebooks)],
        env={"RELAY_TOKEN": token},
    )
    try:
        assert client.url.startswith(relay.url(name) + "/lab?token=")
        lab = _lab_token(client.url)
        _assert_no_secret_in_argv(client.proc.pid, [token, lab])
        host = f"{name}.localhost"
        both = {"Host": host, "X-Relay-Token": token, "Authorization": f"token {lab}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{relay.base}/api/contents", headers=both) as resp:
                assert resp.status == 200
                assert [c["name"] for c in (await resp.json())["content"]] == ["hello.txt"]
            # Without the relay credential, Lab's token alone gets nowhere.
            async with session.post(
                f"{relay.base}/api/kernels", headers={"Host": host, "Authorization": f"token {lab}"}
            ) as resp:
                assert resp.status == 401
            async with session.get(f"{relay.base}/api/kernels", headers=both) as resp:
                assert await resp.json() == []
            async with session.post(
                f"{relay.base}/api/kernels", headers=both, json={"name": "python3"}
            ) as resp:
                assert resp.status == 201
                kernel = (await resp.json())["id"]
            output = await _execute(session, relay, both, kernel, "print(6 * 7)")
            assert output == "42\n"
            async with session.delete(f"{relay.base}/api/kernels/{kernel}", headers=both) as resp:
                assert resp.status == 204
    finally:
        assert await client.stop() == 0


async def _execute(
    session: aiohttp.ClientSession, relay: RelayProcess, headers: dict[str, str], kernel: str, code: str
) -> str:
    """Run ``code`` on a kernel over its WebSocket (Jupyter's JSON message protocol); return its stdout."""
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    }
    origin = f"http://{headers['Host']}:{relay.http_port}"
    async with session.ws_connect(
        f"{relay.base}/api/kernels/{kernel}/channels", headers={**headers, "Origin": origin}
    ) as ws:
        await ws.send_str(json.dumps(request))
        out = ""
        while True:
            msg = await ws.receive(timeout=60)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            doc = json.loads(msg.data)
            if doc.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if doc["msg_type"] == "stream":
                out += doc["content"]["text"]
            if doc["msg_type"] == "status" and doc["content"]["execution_state"] == "idle":
                return out
