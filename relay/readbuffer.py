"""One receive buffer, filled by a protocol's callbacks and read by one task: both sides of the data
path read through it (the SSH channel of a tunnel, the visitor's connection).

A read only waits — one future — when what it needs is not there yet (a stream reader layered on
coroutines costs a call chain per read), and a reader may search what is buffered directly: the
visitor's connection finds a whole request head with one search. Reading pauses the producer above
``pause_at`` buffered bytes and resumes it below ``resume_at`` (backpressure). A lost connection's
error is raised by the reads that follow, after what was received before it.

:meth:`ReadBuffer.splice` hands every byte received from then on straight to a writer, inside the
callback, with no task at all: what a WebSocket after its ``101`` needs (:mod:`relay.proxy.splice`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ReadBuffer:
    def __init__(self, *, pause_at: int, resume_at: int, search_limit: int) -> None:
        self._buf = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._pause_at = pause_at
        self._resume_at = resume_at
        self._search_limit = search_limit
        #: Where received bytes go once spliced (None: into the buffer).
        self._sink: Callable[[bytes], None] | None = None
        self._on_end: Callable[[], None] | None = None
        # Made inside the running loop; kept, since each lookup costs a getpid() on Python 3.11.
        self._loop = asyncio.get_running_loop()

    # -- what the producer side subclass provides ---------------------------------------------------

    def _pause_producer(self) -> None:
        raise NotImplementedError

    def _resume_producer(self) -> None:
        raise NotImplementedError

    # -- filled by the protocol's callbacks ---------------------------------------------------------

    def feed_data(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink(data)
            return
        self._buf += data
        if len(self._buf) >= self._pause_at and not self._paused_reading:
            self._paused_reading = True
            self._pause_producer()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()
        if self._on_end is not None:
            self._on_end()

    def feed_error(self, exc: BaseException | None) -> None:
        """The connection is gone; ``exc`` (if any) is what the next reads raise."""
        if exc is not None and self._error is None:
            self._error = exc
        self.feed_eof()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by one task ---------------------------------------------------------------------------

    async def _more(self) -> None:
        """Wait for data, EOF or loss (the caller looks at which)."""
        if self._eof:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if self._paused_reading and len(self._buf) < self._resume_at:
            self._paused_reading = False
            self._resume_producer()
        return data

    def _ended(self) -> None:
        """At EOF with too little buffered: raise the loss, if the end was one."""
        if self._error is not None:
            raise self._error

    async def read(self, n: int = -1) -> bytes:
        while not self._buf:
            if self._eof:
                self._ended()
                return b""
            await self._more()
        return self._take(len(self._buf) if n < 0 else n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                self._ended()
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), n)
            await self._more()
        return self._take(n)

    async def readuntil(self, separator: bytes) -> bytes:
        """Through ``separator``; :class:`asyncio.IncompleteReadError` at EOF or when
        ``search_limit`` bytes hold none (as asyncssh's stream does when its window fills)."""
        start = 0
        while True:
            found = self._buf.find(separator, start)
            if found >= 0:
                return self._take(found + len(separator))
            if len(self._buf) >= self._search_limit or self._eof:
                self._ended()
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), None)
            start = max(0, len(self._buf) - len(separator) + 1)
            await self._more()

    async def wait_for_data(self) -> bool:
        """Wait until something is buffered; False at EOF with nothing (raises a loss)."""
        while not self._buf:
            if self._eof:
                self._ended()
                return False
            await self._more()
        return True

    def take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes (at most what is there), without waiting."""
        return self._take(n)

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return len(self._buf)

    # -- splicing -----------------------------------------------------------------------------------

    def splice(self, sink: Callable[[bytes], None], on_end: Callable[[], None]) -> bytes:
        """From now on, received bytes go to ``sink`` as they arrive and the end to ``on_end``;
        returns what was buffered before (the caller passes it on first)."""
        held = self._take(len(self._buf))
        self._sink, self._on_end = sink, on_end
        if self._eof:
            self._loop.call_soon(on_end)
        return held

    def pause_producing(self) -> None:
        """The sink is full: stop taking data (the peer is held back by TCP or the SSH window)."""
        if not self._paused_reading:
            self._paused_reading = True
            self._pause_producer()

    def resume_producing(self) -> None:
        if self._paused_reading:
            self._paused_reading = False
            self._resume_producer()
