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


def _expired(task: asyncio.Task[Any], cancelling: int, seconds: float, exc: BaseException | None) -> None:
    """The end of a block whose timer cancelled ``task``: a TimeoutError in place of that
    cancellation, unless the task was cancelled from outside as well (that one goes through)."""
    if sys.version_info >= (3, 11) and task.uncancel() > cancelling:
        return
    raise TimeoutError(f"no progress for {seconds:g} s") from exc


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
            assert self._task is not None and self.seconds is not None
            _expired(self._task, self._cancelling, self.seconds, exc)


class Watchdog:
    """The deadlines of one connection's task, one wait after another, on one lazily moved timer.

    ``async with dog(seconds):`` acts like ``async with Deadline(seconds):``, but a connection that
    serves thousands of requests arms no new timer per wait: its timer fires at most every ``floor``
    seconds (the shortest wait it is given) while a wait is on, and re-arms itself until the wait's
    due time. Any later wait is due no sooner than that, so starting one only stores a float. Waits
    must not nest (each connection waits for one thing at a time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], floor: float) -> None:
        self._loop = loop
        self._task = task
        self._floor = floor
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._active = False
        self._cancelling = 0
        self.seconds: float | None = None
        self.expired = False

    def __call__(self, seconds: float | None) -> Watchdog:
        if self._active:
            raise RuntimeError("a Watchdog's waits must not nest")
        self.seconds = seconds
        return self

    async def __aenter__(self) -> Watchdog:
        if self.seconds is None:
            return self
        now = self._loop.time()
        self._due, self._active, self.expired = now + self.seconds, True, False
        if sys.version_info >= (3, 11):
            self._cancelling = self._task.cancelling()
        if self._handle is None:
            self._handle = self._loop.call_at(min(self._due, now + self._floor), self._check)
        elif self.seconds < self._floor:  # shorter than promised: the armed timer may be too late
            self._rearm(now)
        return self

    def extend(self, seconds: float | None = None) -> None:
        """Progress: the wait is now due ``seconds`` (default: its own span) from now."""
        span = self.seconds if seconds is None else seconds
        if not self._active or span is None:
            return
        now = self._loop.time()
        self._due = now + span
        if span < self._floor:
            self._rearm(now)

    def _rearm(self, now: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(min(self._due, now + self._floor), self._check)

    def _check(self) -> None:
        self._handle = None
        if not self._active:
            return  # between waits: the next one arms the timer again
        now = self._loop.time()
        if now >= self._due:
            self.expired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(min(self._due, now + self._floor), self._check)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.seconds is None:
            return
        self._active = False
        if self.expired and exc_type is asyncio.CancelledError:
            self.expired = False
            _expired(self._task, self._cancelling, self.seconds, exc)

    def close(self) -> None:
        """The connection ended: no timer is left behind."""
        self._active = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
