"""A visitor's connection: a :class:`~relay.socketstream.SocketStream` that hands itself to the proxy
when it is made, and reads a whole request head with one search of its buffer, no awaited call per
line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..socketstream import SocketStream


class BareLF(Exception):
    """A request head's line ends in a bare LF: refused at once (waiting for a CRLFCRLF that never
    comes would hold the connection until the head timeout)."""

    def __init__(self, line: bytes) -> None:
        super().__init__("bare LF")
        self.line = line


class HeadTooLarge(Exception):
    """More than the limit arrived without the end of a head."""


class VisitorStream(SocketStream):
    def __init__(self, on_connect: Callable[[VisitorStream], None], *, limit: int) -> None:
        super().__init__(limit=limit)
        self._on_connect = on_connect
        self.task: asyncio.Task[Any] | None = None  # the task serving it (kept referenced here)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_connect(self)

    # -- the request loop's reads -------------------------------------------------------------------

    async def read_head(self) -> bytes:
        """The next request head through its CRLFCRLF (the caller bounds the wait).

        :class:`BareLF` as soon as the request line, or the line after it, ends in a bare LF (the
        rest is the parser's to refuse); :class:`HeadTooLarge` past ``limit`` bytes without an end;
        :class:`asyncio.IncompleteReadError` if the connection ends first."""
        while True:
            found = self._head_end()
            if found:
                return self.take(found)
            if len(self._buf) > self.limit:
                raise HeadTooLarge()
            if self._eof:
                self._ended()
                raise asyncio.IncompleteReadError(self.take(len(self._buf)), None)
            await self._more()

    def _head_end(self) -> int:
        """Where the buffered head ends (0: not yet)."""
        buf = self._buf
        line_end = buf.find(b"\n")
        if line_end < 0:
            return 0
        if line_end == 0 or buf[line_end - 1] != 0x0D:
            raise BareLF(bytes(buf[: line_end + 1]))
        if len(buf) < line_end + 3:
            return 0
        two = buf[line_end + 1 : line_end + 3]
        if two == b"\r\n":
            return line_end + 3  # no header fields
        if b"\n" in two:
            raise BareLF(bytes(buf[: line_end + 1]))
        # The end of the last field line and the empty line; bare LFs inside are the parser's.
        end = buf.find(b"\n\r\n", line_end + 1)
        return end + 3 if end >= 0 else 0
