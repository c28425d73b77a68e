"""JupyterLab behind the relay: started on a free loopback port with the flags a reverse proxy needs,
its own random token kept as a second lock, and stopped with the client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
from pathlib import Path

import aiohttp

from .config import ClientError

#: Seconds to wait for Lab to answer after starting it (a cold Colab start can take a while).
LAB_START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LabServer:
    def __init__(self, notebook_dir: Path | None = None) -> None:
        self.notebook_dir = notebook_dir
        self.port = 0
        self.token = secrets.token_urlsafe(24)
        self.proc: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            # Visitors arrive with the tunnel's Host name, not localhost.
            "--ServerApp.allow_remote_access=True",
            # The relay sets X-Forwarded-Proto/-Host; Lab uses them to build its own URLs.
            "--ServerApp.trust_xheaders=True",
        ]
        if self.notebook_dir is not None:
            cmd.append(f"--ServerApp.root_dir={self.notebook_dir}")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # Colab runs everything as root
        return cmd

    def environment(self) -> dict[str, str]:
        """Lab's environment: its token in JUPYTER_TOKEN, because a command line is readable by every
        local user (/proc/PID/cmdline) and an environment only by the process's owner; the relay
        token is left out, since neither Lab nor its kernels need it."""
        env = {k: v for k, v in os.environ.items() if k != "RELAY_TOKEN"}
        env["JUPYTER_TOKEN"] = self.token
        return env

    async def start(self, log_path: Path | None = None) -> None:
        if self.notebook_dir is not None and not self.notebook_dir.is_dir():
            raise ClientError(f"--notebook-dir {self.notebook_dir} is not a directory")
        self.port = free_port()
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_path else None
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.environment(),
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ClientError(f"cannot start JupyterLab: {exc}") from exc
        finally:
            if out is not None:
                os.close(out)
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        url = f"http://127.0.0.1:{self.port}/api/status"
        headers = {"Authorization": f"token {self.token}"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LAB_START_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                if self.proc.returncode is not None:
                    raise ClientError(
                        f"JupyterLab exited with code {self.proc.returncode}; is jupyterlab installed? "
                        "(pip install jupyterlab)"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url, headers=headers) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.25)
        await self.stop()
        raise ClientError(f"JupyterLab did not answer within {LAB_START_TIMEOUT:.0f} s")

    def public_url(self, tunnel_url: str) -> str:
        return f"{tunnel_url}/lab?token={self.token}"

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except (asyncio.TimeoutError, TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
