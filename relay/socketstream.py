"""A socket connection as one object: the protocol asyncio calls back, the reader the relay reads (a
:class:`~relay.readbuffer.ReadBuffer`), and the writer it sends through — in place of asyncio's
stream reader, protocol and writer, three layers each read and write crossed. The visitor's
connection (:mod:`relay.proxy.visitor_stream`) and the dashboard's socket are one each; a
WebSocket splice (:mod:`relay.proxy.splice`) gets the pause and resume of its writing here."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from .readbuffer import ReadBuffer
from .writeflow import WriteFlow


class SocketStream(ReadBuffer, WriteFlow, asyncio.Protocol):
    def __init__(self, *, limit: int) -> None:
        # As asyncio's StreamReader with the same limit: reading pauses at twice it.
        ReadBuffer.__init__(self, pause_at=2 * limit, resume_at=limit, search_limit=limit)
        WriteFlow.__init__(self)
        self.limit = limit
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at connection_made

    # -- asyncio's protocol callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.feed_data(data)

    def eof_received(self) -> bool:
        self.feed_eof()
        # Keep the write side open (a half-close may still get its answer), except over TLS,
        # which cannot half-close: as asyncio's StreamReaderProtocol does.
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        # Writes end first: what the end of reading calls back (a splice's end) sees a closed stream.
        self._writes_end(ConnectionResetError("the connection is closed"))
        self.feed_error(exc)

    def _pause_producer(self) -> None:
        if self._gone is None:
            self.transport.pause_reading()

    def _resume_producer(self) -> None:
        if self._gone is None:
            self.transport.resume_reading()

    # -- the writer ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def write_eof(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)
