"""The SSH side of the seam (DESIGN §2): a tunnel's :data:`~relay.tunnels.StreamOpener` opens a
``forwarded-tcpip`` channel back to the client, as a :class:`ChannelStream`.

:class:`ChannelStream` is an asyncssh session (its documented callback interface) that is also the
seam's reader and writer: received data lands in one buffer from asyncssh's ``data_received``
callback (:class:`~relay.readbuffer.ReadBuffer`), and a read only waits — one future — when what it
needs is not there yet. That is lighter than asyncssh's own stream layer, which the hot path paid for
on every read. It raises the seam's
errors — :class:`~relay.errors.BadGateway` when the client refuses or is gone,
:class:`~relay.tunnels.TunnelLost` when the link drops under an open channel — never asyncssh's, so
the HTTP side needs no catch-all.
"""

from __future__ import annotations

import asyncssh

from ssh_tuning import tune_channel

from ..errors import BadGateway
from ..readbuffer import ReadBuffer
from ..tunnels import Stream, StreamOpener, TunnelLost
from ..writeflow import WriteFlow

#: Buffered bytes at which the channel stops taking data (the SSH window then holds the client back),
#: and the level below which it takes data again.
PAUSE_AT = 256 * 1024
RESUME_AT = 64 * 1024
#: A ``readuntil`` that finds no separator in this many bytes fails like asyncio's (an oversized head).
SEARCH_LIMIT = PAUSE_AT


class ChannelStream(ReadBuffer, WriteFlow, asyncssh.SSHTCPSession[bytes]):
    def __init__(self) -> None:
        ReadBuffer.__init__(self, pause_at=PAUSE_AT, resume_at=RESUME_AT, search_limit=SEARCH_LIMIT)
        WriteFlow.__init__(self)
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None

    # -- asyncssh's session callbacks ------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.feed_data(data)

    def eof_received(self) -> bool:
        self.feed_eof()
        return True  # half-close: the request side may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.feed_error(TunnelLost(str(exc)) if exc is not None else None)
        if self._error is not None:  # the link dropped under the channel
            self._writes_end(self._error)
        else:
            self._wake_drain()

    def _pause_producer(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def _resume_producer(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    # -- the seam's writer -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._gone is not None:
            raise self._gone
        assert self._chan is not None
        try:
            self._chan.write(data)
        except asyncssh.Error as exc:
            raise TunnelLost(exc.reason) from exc
        except BrokenPipeError as exc:  # written after the channel closed
            raise TunnelLost(str(exc) or "channel closed") from exc

    def write_eof(self) -> None:
        if self._chan is not None and self._gone is None:
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
