"""VisitorStream.read_head: a whole head with one search, bare LF refused as soon as it shows, a head
over the limit refused without waiting for its end."""

from __future__ import annotations

import asyncio

import pytest

from relay.proxy.visitor_stream import BareLF, HeadTooLarge, VisitorStream
from tests.unit.proxy.test_forward import visitor_stream


@pytest.mark.parametrize(
    ("received", "head", "left"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b""),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"NEXT"),
        # A bare LF inside the fields is the parser's to refuse: the head still ends at LF CRLF.
        (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", b""),
    ],
)
async def test_a_head_is_read_through_its_end(received: bytes, head: bytes, left: bytes) -> None:
    stream, _ = visitor_stream(received)
    assert await asyncio.wait_for(stream.read_head(), 1) == head
    assert stream.take(100) == left


@pytest.mark.parametrize(
    ("received", "line"),
    [
        (b"GET / HTTP/1.1\nHost: a\n\n", b"GET / HTTP/1.1\n"),  # the request line
        (b"GET / HTTP/1.1\r\n\nX", b"GET / HTTP/1.1\r\n"),  # an empty line of a bare LF
        (b"GET / HTTP/1.1\r\nH\n", b"GET / HTTP/1.1\r\n"),  # the next line's first two bytes
        (b"\n", b"\n"),
    ],
)
async def test_a_bare_lf_is_refused_without_waiting(received: bytes, line: bytes) -> None:
    stream, _ = visitor_stream(received)  # no more will come: a wait would hang the test
    with pytest.raises(BareLF) as info:
        await asyncio.wait_for(stream.read_head(), 1)
    assert info.value.line == line


async def test_a_head_over_the_limit_is_refused_before_its_end() -> None:
    stream, _ = visitor_stream(b"GET / HTTP/1.1\r\nX: " + b"a" * (64 * 1024))
    with pytest.raises(HeadTooLarge):
        await asyncio.wait_for(stream.read_head(), 1)


async def test_a_head_arriving_in_pieces_is_put_together() -> None:
    stream, _ = visitor_stream(b"GET / HT")
    reading = asyncio.ensure_future(stream.read_head())
    for piece in (b"TP/1.1\r", b"\nHost: a\r\n", b"\r", b"\n"):
        await asyncio.sleep(0)
        assert not reading.done()
        stream.feed_data(piece)
    assert await asyncio.wait_for(reading, 1) == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


async def test_the_end_of_the_connection_ends_the_read() -> None:
    stream: VisitorStream
    stream, _ = visitor_stream(b"GET / HTTP/1.1\r\n")
    stream.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await asyncio.wait_for(stream.read_head(), 1)
    stream, _ = visitor_stream()
    stream.feed_error(ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(stream.read_head(), 1)
