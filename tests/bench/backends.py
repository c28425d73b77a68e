"""What every stack serves: nginx with a large file of known SHA-256 and a small file (as DESIGN §5
measured), ``/ws`` echoed by an aiohttp process, and JupyterLab for the wide-area page load."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from client.lab import LabServer
from tests.e2e.harness import client_env

from . import nginx
from .processes import Child, free_port, spawn, wait_listening

BIG_PATH = "/big.bin"
SMALL_PATH = "/small.txt"
WS_PATH = "/ws"
#: The small response body: 137 bytes, as in DESIGN §5's small-request figures.
SMALL_BODY = (
    b"relay benchmark: a small static response body, served by nginx from a file. ".ljust(136, b".") + b"\n"
)


@dataclass
class Files:
    root: Path
    big_size: int
    big_sha256: str


def write_files(root: Path, big_size: int) -> Files:
    """Random content (so nothing on the path can compress it), hashed as it is written."""
    root.mkdir(parents=True, exist_ok=True)
    (root / SMALL_PATH.lstrip("/")).write_bytes(SMALL_BODY)
    digest = hashlib.sha256()
    with open(root / BIG_PATH.lstrip("/"), "wb") as out:
        left = big_size
        while left:
            piece = os.urandom(min(left, 1 << 20))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return Files(root, big_size, digest.hexdigest())


@dataclass
class Backend:
    port: int
    files: Files
    children: list[Child]

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


async def start_backend(work: Path, big_size: int) -> Backend:
    files = write_files(work / "www", big_size)
    ws_port, port = free_port(), free_port()
    echo = spawn("ws-echo", [sys.executable, "-m", "tests.bench.ws_echo", str(ws_port)], work)
    try:
        await wait_listening(echo, ws_port)
        server = await nginx.start_backend(work / "nginx-backend", port, files.root, ws_port, work)
    except BaseException:
        echo.stop()
        raise
    return Backend(port, files, [echo, server])


@dataclass
class Lab:
    port: int
    token: str
    child: Child

    def path(self) -> str:
        return f"/lab?token={self.token}"


async def start_lab(work: Path) -> Lab:
    """JupyterLab with the client's own flags (client/lab.py), its config and state kept in ``work``."""
    home = work / "lab-home"
    (home / "notebooks").mkdir(parents=True, exist_ok=True)
    server = LabServer(home / "notebooks")
    server.port = free_port()
    # Lab takes its token from JUPYTER_TOKEN (client/lab.py keeps it off the command line).
    env = client_env(home) | {"JUPYTER_TOKEN": server.token}
    child = spawn("jupyterlab", server.command(), work, env=env)
    # Lab's first start builds its caches; allow it more than a plain server.
    await wait_listening(child, server.port, timeout=120)
    return Lab(server.port, server.token, child)
