"""The wide-area case: JupyterLab published through every stack while each SSH client reaches its
server through its own delaying proxy (50 ms each way), and "direct" is the browser reaching Lab
through such a proxy too: the same delayed link, without a tunnel. "direct-local" (no delay at all)
shows how much of a load is the browser's own work on this machine."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser

from . import lab_load
from .backends import start_lab
from .http_client import Endpoint
from .processes import free_port, spawn, wait_listening
from .stacks import Servers, Stack, start_stacks

#: One-way delay of the wide-area link, seconds.
DELAY = 0.05


@dataclass
class WideArea:
    browser: Browser
    stacks: list[Stack]
    lab_path: str

    async def load(self, stack: Stack) -> lab_load.LabLoad:
        return await lab_load.load(self.browser, lab_load.lab_url(stack.endpoint, self.lab_path))


async def _delaying_proxy(name: str, target: int, work: Path, cleanup: contextlib.AsyncExitStack) -> int:
    """A delay_proxy process (its own, so its timers do not share a CPU-bound event loop)."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.bench.delay_proxy", str(port), str(target), "--delay", str(DELAY)]
    child = spawn(f"delay-{name}", argv, work)
    cleanup.callback(child.stop)
    await wait_listening(child, port)
    return port


async def start_wide_area(servers: Servers, work: Path, cleanup: contextlib.AsyncExitStack) -> WideArea:
    lab = await start_lab(work)
    cleanup.callback(lab.child.stop)
    via = {
        "direct": await _delaying_proxy("direct", lab.port, work, cleanup),
        "relay": await _delaying_proxy("relay", servers.relay.ssh_port, work, cleanup),
        "relay-http": await _delaying_proxy("relay-http", servers.relay.http_port, work, cleanup),
        "sshd": await _delaying_proxy("sshd", servers.sshd.port, work, cleanup),
    }
    stacks = await start_stacks(servers, lab.port, (lab.path(), None), cleanup, prefix="lab-", via=via)
    stacks.insert(0, Stack("direct-local", Endpoint(lab.port, f"127.0.0.1:{lab.port}")))
    browser = await cleanup.enter_async_context(lab_load.chromium())
    wide = WideArea(browser, stacks, lab.path())
    # Lab's own first-load work (and each path's first use) is not what is measured.
    for stack in stacks:
        await wide.load(stack)
    return wide
