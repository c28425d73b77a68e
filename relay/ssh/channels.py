"""The SSH side of the seam (DESIGN §2): a tunnel's :data:`~relay.tunnels.StreamOpener` opens a
``forwarded-tcpip`` channel back to the client, as a :class:`ChannelStream`.

:class:`ChannelStream` is an asyncssh session (its documented callback interface) that is also the
seam's reader and writer: received data lands in one buffer from asyncssh's ``data_received``
callback, and a read only waits — one future — when what it needs is not there yet. That is lighter
than asyncssh's own stream layer, which the hot path paid for on every read. It raises the seam's
errors — :class:`~relay.errors.BadGateway` when the client refuses or is gone,
:class:`~relay.tunnels.TunnelLost` when the link drops under an open channel — never asyncssh's, so
the HTTP side needs no catch-all.
"""

from __future__ import annotations

import asyncio

import asyncssh

from ssh_tuning import tune_channel

from ..errors import BadGateway
from ..tunnels import Stream, StreamOpener, TunnelLost

#: Buffered bytes at which the channel stops taking data (the SSH window then holds the client back),
#: and the level below which it takes data again.
PAUSE_AT = 256 * 1024
RESUME_AT = 64 * 1024
#: A ``readuntil`` that finds no separator in this many bytes fails like asyncio's (an oversized head).
SEARCH_LIMIT = PAUSE_AT


class ChannelStream(asyncssh.SSHTCPSession[bytes]):
    def __init__(self) -> None:
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._buf = bytearray()
        self._eof = False
        self._lost: TunnelLost | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        # Sessions are made inside the running loop; kept, since each lookup costs a getpid() on 3.11.
        self._loop = asyncio.get_running_loop()

    # -- asyncssh's session callbacks ------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._buf += data
        if len(self._buf) >= PAUSE_AT and self._chan is not None and not self._paused_reading:
            self._paused_reading = True
            self._chan.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # half-close: the request side may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None:
            self._lost = TunnelLost(str(exc))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the seam's reader -----------------------------------------------------------------------

    async def _more(self) -> None:
        """Wait for data, EOF or loss; raises the loss."""
        if self._lost is not None:
            raise self._lost
        if self._eof:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._lost is not None:
            raise self._lost

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if self._paused_reading and len(self._buf) < RESUME_AT and self._chan is not None:
            self._paused_reading = False
            self._chan.resume_reading()
        return data

    async def read(self, n: int = -1) -> bytes:
        while not self._buf:
            if self._eof:
                if self._lost is not None:
                    raise self._lost
                return b""
            await self._more()
        return self._take(len(self._buf) if n < 0 else n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                if self._lost is not None:
                    raise self._lost
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), n)
            await self._more()
        return self._take(n)

    async def readuntil(self, separator: bytes) -> bytes:
        start = 0
        while True:
            found = self._buf.find(separator, start)
            if found >= 0:
                return self._take(found + len(separator))
            if len(self._buf) >= SEARCH_LIMIT or self._eof:
                if self._lost is not None:
                    raise self._lost
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), None)
            start = max(0, len(self._buf) - len(separator) + 1)
            await self._more()

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def buffered(self) -> int:
        """Bytes received and not read yet: on a channel whose response just ended, any is too many."""
        return len(self._buf)

    # -- the seam's writer -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        assert self._chan is not None
        try:
            self._chan.write(data)
        except asyncssh.Error as exc:
            raise TunnelLost(exc.reason) from exc
        except BrokenPipeError as exc:  # written after the channel closed
            raise TunnelLost(str(exc) or "channel closed") from exc

    async def drain(self) -> None:
        while self._write_paused and self._lost is None:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self._lost is not None:
            raise self._lost

    def write_eof(self) -> None:
        if self._chan is not None and self._lost is None:
            try:
                self._chan.write_eof()
            except (asyncssh.Error, BrokenPipeError) as exc:
                raise TunnelLost(str(exc)) from exc

    def close(self) -> None:
        if self._chan is not None:
            self._chan.close()

    def is_closing(self) -> bool:
        return self._chan is None or self._chan.is_closing()


def channel_opener(conn: asyncssh.SSHServerConnection, listen_host: str, listen_port: int) -> StreamOpener:
    """Opens channels for the forward ``listen_host:listen_port`` of ``conn``."""

    async def open_stream() -> Stream:
        try:
            chan, session = await conn.create_connection(
                ChannelStream, listen_host, listen_port, "127.0.0.1", 0
            )
        except asyncssh.ChannelOpenError as exc:
            raise BadGateway(
                f"the tunnel's client refused the connection: {exc.reason}; "
                "is the app running on the client's side?"
            ) from None
        except (asyncssh.Error, ConnectionError) as exc:
            raise BadGateway(f"the tunnel's client is gone: {exc}") from None
        tune_channel(chan)
        assert isinstance(session, ChannelStream)
        return Stream(session, session)

    return open_stream
