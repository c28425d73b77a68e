"""relay.proxy.forward against a fake tunnel whose opener returns in-memory streams: framing,
keep-alive reuse, 1xx, upgrade, truncation and stalls, in milliseconds."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import pytest

from relay.http1 import parse_request_head
from relay.limits import Limits
from relay.proxy.forward import SMALL_BODY, Abort, Forwarder, UpstreamFailed
from relay.proxy.visitor import Visitor
from relay.proxy.visitor_stream import VisitorStream
from relay.ssh.channels import ChannelStream
from relay.tunnels import Stream, Tunnel, TunnelLost

FAST = replace(Limits(), upstream_response_timeout=0.1, stream_idle_timeout=0.1, http_body_idle_timeout=0.1)


class _Transport:
    def __init__(self) -> None:
        self.closing = False

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing


class Sink:
    """A writer that keeps what it is given; ``on_write`` sees each write (the backend answers)."""

    def __init__(self, on_write: Callable[[bytes], None] | None = None) -> None:
        self.transport = _Transport()
        self.data = bytearray()
        self.closed = False
        self.eof = False
        self.on_write = on_write

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.data += data
        if self.on_write is not None:
            self.on_write(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True
        self.transport.closing = True

    def is_closing(self) -> bool:
        return self.closed


class VisitorSocket(asyncio.Transport):
    """The visitor's end: what the relay sends it is kept, as a socket would deliver it."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def visitor_stream(upload: bytes = b"") -> tuple[VisitorStream, VisitorSocket]:
    stream, socket = VisitorStream(lambda _: None, limit=64 * 1024), VisitorSocket()
    stream.connection_made(socket)
    stream.feed_data(upload)
    return stream, socket


class LostReader:
    """A channel whose SSH link is gone."""

    async def read(self, n: int = -1) -> bytes:
        raise TunnelLost("connection lost")

    async def readexactly(self, n: int) -> bytes:
        raise TunnelLost("connection lost")

    async def readuntil(self, separator: bytes) -> bytes:
        raise TunnelLost("connection lost")

    def at_eof(self) -> bool:
        return False

    def buffered(self) -> int:
        return 0


_REQUEST_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.[01]\r\n")


class Backend:
    """The tunnel's far side: the n-th request head written to any of its channels gets the n-th
    scripted response, as a real backend answers (nothing arrives before it was asked for).
    ``eof``: the channel ends after the last response."""

    def __init__(self, *responses: bytes, eof: bool = False, lost: bool = False) -> None:
        self.responses = list(responses)
        self.eof = eof
        self.lost = lost
        self.channels: list[tuple[Any, Sink]] = []

    async def open(self) -> Stream:
        if self.lost:
            sink = Sink()
            self.channels.append((LostReader(), sink))
            return Stream(LostReader(), cast(Any, sink))
        reader = ChannelStream()

        def answer(data: bytes) -> None:
            if not _REQUEST_LINE.match(data) or not self.responses:
                return
            reader.data_received(self.responses.pop(0), None)
            if self.eof and not self.responses:
                reader.eof_received()

        sink = Sink(answer)
        self.channels.append((reader, sink))
        return Stream(reader, cast(Any, sink))


def _tunnel(backend: Backend) -> Tunnel:
    return Tunnel("lab.localhost", 1, "alice", "127.0.0.1:1", backend.open)


def _visitor(upload: bytes = b"") -> tuple[Visitor, VisitorSocket]:
    stream, socket = visitor_stream(upload)
    return Visitor(cast(Any, None), stream, "127.0.0.1", "http"), socket


def _request(extra: str = "") -> Any:
    return parse_request_head(f"GET /x HTTP/1.1\r\nHost: lab.localhost\r\n{extra}\r\n".encode())


FORWARDER = Forwarder(limits=FAST, relay_domain="localhost", trust_proxy=())


async def test_a_length_framed_response_passes_and_the_channel_is_kept_for_the_next_request() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    backend = Backend(ok, ok)
    tunnel = _tunnel(backend)
    visitor, sink = _visitor()
    first = await FORWARDER.forward(visitor, _request(), tunnel)
    second = await FORWARDER.forward(visitor, _request(), tunnel)
    assert (first.status, first.keep, second.status, second.keep) == (200, True, 200, True)
    assert bytes(sink.data).count(b"hello") == 2
    assert len(backend.channels) == 1, "the kept channel was not reused"
    request = bytes(backend.channels[0][1].data)
    assert request.count(b"GET /x HTTP/1.1\r\n") == 2 and b"X-Forwarded-For: 127.0.0.1" in request


async def test_a_chunked_response_passes_verbatim() -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n"
    backend = Backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    visitor, sink = _visitor()
    outcome = await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert outcome.keep and bytes(sink.data).endswith(body)


async def test_interim_responses_are_passed_on_before_the_final_one() -> None:
    backend = Backend(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    visitor, sink = _visitor()
    outcome = await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert outcome.status == 204
    assert bytes(sink.data).index(b"103") < bytes(sink.data).index(b"204")


async def test_a_body_until_close_ends_the_connection_and_closes_the_channel() -> None:
    backend = Backend(b"HTTP/1.1 200 OK\r\n\r\nall of it", eof=True)
    visitor, sink = _visitor()
    outcome = await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert not outcome.keep and bytes(sink.data).endswith(b"all of it")
    assert b"Connection: close" in bytes(sink.data)
    assert backend.channels[0][1].closed


async def test_a_request_body_reaches_the_backend() -> None:
    backend = Backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    visitor, _ = _visitor(b"abcde")
    outcome = await FORWARDER.forward(visitor, _request("Content-Length: 5\r\n"), _tunnel(backend))
    assert outcome.status == 200
    assert bytes(backend.channels[0][1].data).endswith(b"\r\n\r\nabcde")


@pytest.mark.parametrize(
    ("script", "eof", "status"),
    [
        (b"", True, 502),  # closed without answering
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True, 502),  # small body cut
        (b"", False, 504),  # no answer in time
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslow", False, 504),  # small body stalls
        (b"HTTP/1.1 2OO OK\r\n\r\n", True, 502),  # a broken status line
    ],
)
async def test_failures_before_anything_was_sent_are_answered_and_the_channel_closed(
    script: bytes, eof: bool, status: int
) -> None:
    backend = Backend(script, eof=eof)
    visitor, sink = _visitor()
    with pytest.raises(UpstreamFailed) as info:
        await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert info.value.status == status
    assert sink.data == b"", "nothing may reach the visitor before the error reply"
    assert backend.channels[0][1].closed


async def test_a_lost_tunnel_link_is_a_502() -> None:
    backend = Backend(lost=True)
    visitor, _ = _visitor()
    with pytest.raises(UpstreamFailed) as info:
        await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert info.value.status == 502 and "disconnected" in str(info.value)


async def test_a_large_body_cut_short_aborts_the_visitor_connection() -> None:
    size = SMALL_BODY * 4
    backend = Backend(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * 100, eof=True)
    visitor, sink = _visitor()
    with pytest.raises(Abort):
        await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert bytes(sink.data).startswith(b"HTTP/1.1 200")
    assert backend.channels[0][1].closed


async def test_an_upgrade_pipes_both_ways_and_never_keeps_the_channel() -> None:
    backend = Backend(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfrom-app",
        eof=True,
    )
    visitor, sink = _visitor(b"from-visitor")
    visitor.reader.feed_eof()
    head = _request("Connection: Upgrade\r\nUpgrade: websocket\r\n")
    outcome = await FORWARDER.forward(visitor, head, _tunnel(backend))
    assert outcome.status == 101 and not outcome.keep
    assert bytes(sink.data).endswith(b"from-app")
    assert bytes(backend.channels[0][1].data).endswith(b"from-visitor")


class _BuggyRouter:
    def route(self, head: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug in the pipeline")


async def test_a_bug_answers_502_logs_one_traceback_and_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from relay.proxy.visitor import Front

    front = Front(FAST, cast(Any, _BuggyRouter()), cast(Any, None), FORWARDER, ())
    stream, sink = visitor_stream(
        b"GET /x HTTP/1.1\r\nHost: lab.localhost\r\n\r\nGET /y HTTP/1.1\r\nHost: lab.localhost\r\n\r\n"
    )
    visitor = Visitor(front, stream, "127.0.0.1", "http")
    with caplog.at_level("ERROR"):
        await visitor.serve()
    assert bytes(sink.data).startswith(b"HTTP/1.1 502 ")
    assert b"Connection: close" in bytes(sink.data) and bytes(sink.data).count(b"HTTP/1.1") == 1
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "host=lab.localhost GET /x" in tracebacks[0].getMessage()
    assert sink.closed


async def test_a_visitor_gone_before_the_response_is_a_lost_connection_not_a_bug() -> None:
    backend = Backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    visitor, sink = _visitor()
    sink.close()  # the visitor hung up while the backend answered
    with pytest.raises(Abort, match="visitor connection lost"):  # no traceback: not a bug
        await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert backend.channels[0][1].closed


async def test_a_link_lost_before_the_request_is_written_is_a_502_not_a_bug() -> None:
    backend = Backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    tunnel = _tunnel(backend)
    stream = await tunnel.open_stream()

    def lost(data: bytes) -> None:
        raise TunnelLost("connection lost")

    stream.writer.write = lost  # type: ignore[method-assign]
    visitor, sink = _visitor()
    visitor.keep_idle(tunnel, stream)
    with pytest.raises(UpstreamFailed) as info:
        await FORWARDER.forward(visitor, _request(), tunnel)
    assert info.value.status == 502 and sink.data == b""


@pytest.mark.parametrize(
    ("method", "response"),
    [
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),  # more than its length
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
        ),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),  # a body after HEAD
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\nbody"),  # a body after 204
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\nbody"),  # and after 304
        ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),  # past the last chunk
    ],
)
async def test_a_channel_with_bytes_past_the_framing_is_closed_not_kept(method: str, response: bytes) -> None:
    backend = Backend(response, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
    tunnel = _tunnel(backend)
    visitor, sink = _visitor()
    head = parse_request_head(f"{method} /x HTTP/1.1\r\nHost: lab.localhost\r\n\r\n".encode())
    first = await FORWARDER.forward(visitor, head, tunnel)
    assert first.keep  # the visitor connection is fine: it got one whole response
    assert backend.channels[0][1].closed, "an unclean channel went back to the pool"
    assert b"second" not in bytes(sink.data) and b"EXTRA" not in bytes(sink.data)
    second = await FORWARDER.forward(visitor, _request(), tunnel)
    assert second.status == 200 and bytes(sink.data).endswith(b"fresh")
    assert len(backend.channels) == 2  # the next request got a new channel


async def test_bytes_arriving_while_the_channel_idles_make_it_unusable() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    backend = Backend(ok, ok)
    tunnel = _tunnel(backend)
    visitor, sink = _visitor()
    await FORWARDER.forward(visitor, _request(), tunnel)
    reader, writer = backend.channels[0]
    assert not writer.closed  # kept
    reader.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate", None)  # unasked for
    second = await FORWARDER.forward(visitor, _request(), tunnel)
    assert second.status == 200 and writer.closed and len(backend.channels) == 2
    assert b"late" not in bytes(sink.data)


async def test_a_101_to_a_request_without_upgrade_is_a_502_and_closes_the_channel() -> None:
    backend = Backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw"
    )
    visitor, sink = _visitor()
    with pytest.raises(UpstreamFailed) as info:
        await FORWARDER.forward(visitor, _request(), _tunnel(backend))
    assert info.value.status == 502 and sink.data == b""
    assert backend.channels[0][1].closed


async def test_an_http10_keep_alive_visitor_is_kept_on_both_hops() -> None:
    backend = Backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok"
    )
    visitor, sink = _visitor()
    head = parse_request_head(
        b"GET /x HTTP/1.0\r\nHost: lab.localhost\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n"
    )
    outcome = await FORWARDER.forward(visitor, head, _tunnel(backend))
    sent = bytes(backend.channels[0][1].data)
    assert b"\r\nConnection: keep-alive\r\n" in sent and b"X-Hop" not in sent
    assert outcome.keep and b"\r\nConnection: keep-alive\r\n" in bytes(sink.data)
    assert b"Keep-Alive: timeout" not in bytes(sink.data)  # the backend's hop-by-hop field stays there
