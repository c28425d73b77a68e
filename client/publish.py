"""The one flow the CLI and the notebook API share: start Lab if asked, hold the tunnel, stop Lab."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import HostKeyPins
from .connect import TunnelClient, TunnelSpec

if TYPE_CHECKING:
    from .lab import LabServer


@dataclass
class Publication:
    """What a caller gets once the tunnel is up."""

    url: str  # the URL to open (with Lab's token for --lab)
    tunnel_url: str


class Publisher:
    def __init__(
        self,
        spec: TunnelSpec,
        pins: HostKeyPins,
        events: Callable[[str], None],
        *,
        lab: bool = False,
        notebook_dir: Path | None = None,
        lab_log: Path | None = None,
    ) -> None:
        self.spec = spec
        self.pins = pins
        self.events = events
        self.lab: LabServer | None = None
        if lab:
            # Imported only for --lab: it pulls in aiohttp, ~130 ms of the time to a URL otherwise.
            from .lab import LabServer

            self.lab = LabServer(notebook_dir)
        self.lab_log = lab_log
        self.client: TunnelClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Publication:
        """Start Lab (if asked) and the tunnel; returns once the URL is known."""
        if self.lab is not None:
            self.events("starting JupyterLab")
            await self.lab.start(self.lab_log)
            self.spec.local_port = self.lab.port
        self.client = TunnelClient(self.spec, self.pins, self.events)
        self._task = asyncio.ensure_future(self.client.run())
        try:
            tunnel_url = await self.client.ready
        except BaseException:
            await self.stop()
            raise
        url = self.lab.public_url(tunnel_url) if self.lab is not None else tunnel_url
        return Publication(url, tunnel_url)

    async def wait(self) -> None:
        """Until the tunnel ends for good (a fatal error raises here)."""
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.lab is not None:
            await self.lab.stop()
