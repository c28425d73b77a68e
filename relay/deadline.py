"""A deadline that moves with progress, cheap enough for the hot path of a pump.

``async with Deadline(60) as d:`` cancels the enclosed code when ``d.extend()`` has not been called for
60 s and raises :class:`TimeoutError` at the ``async with``. Unlike ``asyncio.wait_for`` it creates no
task, and unlike re-entering ``asyncio.timeout`` per read, moving it forward is one float store: the one
timer is re-armed lazily when it fires early. ``Deadline(None)`` never expires.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any


class Deadline:
    def __init__(
        self,
        seconds: float | None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        task: asyncio.Task[Any] | None = None,
    ) -> None:
        """``loop`` and ``task`` (the running loop and the task that enters the block) spare two
        lookups when the caller has them: on Python 3.11 each costs a ``getpid()``."""
        self.seconds = seconds
        self.expired = False
        self._expires = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._task: asyncio.Task[Any] | None = task
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        if self.seconds is None:
            return self
        loop = self._loop = self._loop or asyncio.get_running_loop()
        self._task = self._task or asyncio.current_task(loop)
        if self._task is None:
            raise RuntimeError("Deadline must be used inside a task")
        if sys.version_info >= (3, 11):
            self._cancelling = self._task.cancelling()
        self._expires = loop.time() + self.seconds
        self._handle = loop.call_at(self._expires, self._check)
        return self

    def extend(self, seconds: float | None = None) -> None:
        """Progress: the deadline is now ``seconds`` (default: the original span) from now."""
        loop = self._loop
        span = self.seconds if seconds is None else seconds
        if self._handle is None or loop is None or span is None:
            return
        self._expires = loop.time() + span
        if self._expires < self._handle.when():
            # Moved earlier than the armed timer (a shorter phase starts): re-arm now, rarely.
            self._handle.cancel()
            self._handle = loop.call_at(self._expires, self._check)

    def _check(self) -> None:
        assert self._task is not None and self._loop is not None
        loop = self._loop
        if loop.time() >= self._expires:
            self._handle = None
            self.expired = True
            self._task.cancel()
        else:
            self._handle = loop.call_at(self._expires, self._check)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.expired and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if sys.version_info >= (3, 11) and self._task.uncancel() > self._cancelling:
                return  # cancelled from outside as well: let that cancellation through
            raise TimeoutError(f"no progress for {self.seconds:g} s") from exc
