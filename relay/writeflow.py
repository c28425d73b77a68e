"""The writing half's flow control, shared by the data path's two streams (a socket's and an SSH
channel's): the transport says when its buffer is over its high-water mark and when it can take data
again; :meth:`WriteFlow.drain` waits in between, and a WebSocket splice (:mod:`relay.proxy.splice`)
is told both, to pause and resume its source."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class WriteFlow:
    #: The running loop (:class:`~relay.readbuffer.ReadBuffer` keeps it).
    _loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        #: What every write raises once the stream is gone (None while it is not).
        self._gone: BaseException | None = None
        #: Called when the transport is full / can take data again (a splice's flow control).
        self.on_pause_writing: Callable[[], None] | None = None
        self.on_resume_writing: Callable[[], None] | None = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.on_pause_writing is not None:
            self.on_pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()
        if self.on_resume_writing is not None:
            self.on_resume_writing()

    def _writes_end(self, error: BaseException) -> None:
        """The stream is gone: writes raise ``error`` from now on, and a waiting drain wakes."""
        self._gone = error
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark; a stream gone raises."""
        while self._write_paused and self._gone is None:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self._gone is not None:
            raise self._gone
