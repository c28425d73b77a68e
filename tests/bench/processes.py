"""Child processes of the benchmark (nginx, sshd, ssh, echo server, Lab): started with their output in
a log file, waited for by port, and stopped exactly once, gently first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Seconds a child gets to listen on its port before the benchmark gives up on it.
START_TIMEOUT = 30.0
#: Seconds between SIGTERM and SIGKILL when stopping a child.
STOP_GRACE = 5.0


def free_port() -> int:
    """A port nothing listens on now (for programs that cannot report the port they picked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class Child:
    """One child process; its stdout and stderr go to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        # Each child leads its own process group, so its helpers (sshd's per-connection children,
        # nginx's workers, Lab's kernels) go with it.
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(
    name: str,
    argv: list[str],
    logdir: Path,
    *,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> Child:
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Child(name, proc, log)


async def wait_listening(child: Child, port: int, timeout: float = START_TIMEOUT) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}):\n{child.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"{child.name} did not listen on port {port}:\n{child.log_tail()}")


def rss_kib(pid: int) -> int:
    """Resident set size of one process, KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pss_kib(pid: int) -> int:
    """Proportional set size, KiB: shared pages divided among the processes sharing them, so a sum
    over forked processes (sshd's per-connection children) counts each page once."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


def descendants(pid: int) -> list[int]:
    """``pid`` and all processes below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command name may contain spaces; the fields after its closing paren are fixed.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found
