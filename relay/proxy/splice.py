"""A WebSocket (or any upgraded connection) after its ``101``: the visitor's connection and the tunnel's
channel joined in their receive callbacks. Each byte is handed to the other side inside the callback
that received it — no task, no awaited read, no copy into a buffer — and backpressure is the two
sides' own flow control: a side whose writes are paused (a full socket buffer, a closed SSH window)
pauses the reading of the other.

The rules of the pipe it replaces hold: one side's EOF is passed on as a half-close, and the other
side then has ``linger`` seconds to finish; a direction paused with data waiting for ``stall``
seconds ends it; there is no limit on its duration (a WebSocket may live for days).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from ..readbuffer import ReadBuffer
from ..tunnels import TunnelLost


class End(Protocol):
    """One side of a splice: it receives through a :class:`ReadBuffer` and sends through these."""

    on_pause_writing: Callable[[], None] | None
    on_resume_writing: Callable[[], None] | None

    def write(self, data: bytes) -> None: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...


class Splice:
    def __init__(
        self,
        a: tuple[ReadBuffer, End],
        b: tuple[ReadBuffer, End],
        *,
        count: tuple[Callable[[int], None], Callable[[int], None]],
        linger: float,
        stall: float | None,
    ) -> None:
        """``a`` and ``b``: each side's receive buffer and sender; ``count``: what each direction
        moved (a→b, b→a), called as the bytes flow."""
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._sides = (a, b)
        self._count = count
        self._linger, self._stall = linger, stall
        self.moved = [0, 0]  # a→b, b→a
        self._ended = [False, False]
        self._timer: asyncio.TimerHandle | None = None  # linger, after one direction ended
        self._stalls: list[asyncio.TimerHandle | None] = [None, None]

    async def run(self) -> tuple[int, int]:
        """Join the two sides until both directions end (or one, plus ``linger``); closes both."""
        for direction in (0, 1):
            self._start(direction)
        try:
            await self._done
        finally:
            self._finish()
        return self.moved[0], self.moved[1]

    def _start(self, direction: int) -> None:
        src = self._sides[direction][0]
        src_end, dst = self._sides[direction][1], self._sides[1 - direction][1]
        count = self._count[direction]

        def sink(data: bytes) -> None:
            if dst.is_closing():
                self._stop()  # the receiving side is gone: nothing more can be delivered
                return
            try:
                dst.write(data)
            except (TunnelLost, ConnectionError):  # the channel dropped, or the socket did
                self._stop()
                return
            self.moved[direction] += len(data)
            count(len(data))

        def paused() -> None:  # dst cannot take more: hold src back, and time the wait
            src.pause_producing()
            if self._stall is not None and self._stalls[direction] is None:
                self._stalls[direction] = self._loop.call_later(self._stall, self._stop)

        def resumed() -> None:
            timer, self._stalls[direction] = self._stalls[direction], None
            if timer is not None:
                timer.cancel()
            src.resume_producing()

        dst.on_pause_writing, dst.on_resume_writing = paused, resumed
        held = src.splice(sink, lambda: self._end(direction, src_end, dst))
        if held:
            sink(held)

    def _end(self, direction: int, src_end: End, dst: End) -> None:
        """``direction``'s source ended: a half-close onward, or the end if the source is gone."""
        if self._ended[direction]:
            return
        self._ended[direction] = True
        if src_end.is_closing() or all(self._ended):
            self._stop()
            return
        with contextlib.suppress(Exception):
            dst.write_eof()
        self._timer = self._loop.call_later(self._linger, self._stop)

    def _stop(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _finish(self) -> None:
        for timer in (self._timer, *self._stalls):
            if timer is not None:
                timer.cancel()
        for _, end in self._sides:
            end.on_pause_writing = end.on_resume_writing = None
            with contextlib.suppress(Exception):
                end.close()
