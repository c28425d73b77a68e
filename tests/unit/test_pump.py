"""Body pumping: exact lengths and chunked coding forwarded verbatim, truncation detected."""

from __future__ import annotations

import asyncio

import pytest

from relay.pump import Truncated, copy_chunked, copy_exact


class MemoryWriter:
    """An in-memory ByteWriter that records what it was given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.drains = 0
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.data += data

    async def drain(self) -> None:
        self.drains += 1

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


# -- copy_exact ------------------------------------------------------------------------------------


async def test_copy_exact_moves_exactly_length_bytes() -> None:
    reader = _reader(b"hello worldNEXT REQUEST")
    writer = MemoryWriter()
    assert await copy_exact(reader, writer, 11) == 11
    assert bytes(writer.data) == b"hello world"
    assert writer.drains >= 1
    assert await reader.read() == b"NEXT REQUEST"  # nothing beyond the body was consumed


async def test_copy_exact_large_body_in_several_writes() -> None:
    body = bytes(range(256)) * 1024  # 256 KiB, more than one PUMP_CHUNK
    writer = MemoryWriter()
    assert await copy_exact(_reader(body), writer, len(body)) == len(body)
    assert bytes(writer.data) == body
    assert writer.drains >= 4


async def test_copy_exact_zero() -> None:
    writer = MemoryWriter()
    assert await copy_exact(_reader(b"x"), writer, 0) == 0
    assert writer.data == b""


async def test_copy_exact_short_body_is_truncated() -> None:
    writer = MemoryWriter()
    with pytest.raises(Truncated):
        await copy_exact(_reader(b"only ten b"), writer, 20)
    assert bytes(writer.data) == b"only ten b"


# -- copy_chunked ----------------------------------------------------------------------------------


async def test_copy_chunked_simple() -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    reader = _reader(body + b"GET /next HTTP/1.1\r\n")
    writer = MemoryWriter()
    assert await copy_chunked(reader, writer) == len(body)
    assert bytes(writer.data) == body
    assert await reader.read() == b"GET /next HTTP/1.1\r\n"


async def test_copy_chunked_forwards_extensions_and_trailers_verbatim() -> None:
    body = (
        b'A;name=value;quoted="x y"\r\n0123456789\r\n'
        b"1f \t; ext\r\n" + b"z" * 31 + b"\r\n"
        b"0;last\r\n"
        b"Trailer-One: 1\r\n"
        b"Server-Timing: total;dur=12\r\n"
        b"\r\n"
    )
    writer = MemoryWriter()
    assert await copy_chunked(_reader(body), writer) == len(body)
    assert bytes(writer.data) == body


async def test_copy_chunked_uppercase_hex_and_binary_data() -> None:
    payload = bytes(range(256)) + b"\r\n0\r\n\r\n"  # chunk data may contain anything, CRLFs included
    body = b"%X\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n"
    writer = MemoryWriter()
    assert await copy_chunked(_reader(body), writer) == len(body)
    assert bytes(writer.data) == body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"5\r\nhel",
        b"5\r\nhello",
        b"5\r\nhello\r\n",
        b"5\r\nhello\r\n0\r\n",
        b"5\r\nhello\r\n0\r\nTrailer: x\r\n",
        b"5",
    ],
)
async def test_copy_chunked_truncated(body: bytes) -> None:
    with pytest.raises(Truncated):
        await copy_chunked(_reader(body), MemoryWriter())


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"1234567890123456\r\n",  # more than 15 hex digits
        b"5\nhello\r\n0\r\n\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"5\r\nhello\r\n0\r\n folded: trailer\r\n\r\n",
        b"5\r\nhello\r\n0\r\nA: 1\nB: 2\r\n\r\n",  # bare LF inside a trailer line
        b"5\r\nhello\r\n0\r\nA: 1\n\r\n",  # a bare LF that would end the message elsewhere
        b"5\r\nhello\r\n0\r\nA: 1\rB\r\n\r\n",  # bare CR
        b"5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n",  # over-long size line
    ],
)
async def test_copy_chunked_bad_framing(body: bytes) -> None:
    with pytest.raises(Truncated):
        await copy_chunked(_reader(body), MemoryWriter())


async def test_copy_chunked_too_many_trailers() -> None:
    body = b"0\r\n" + b"X-T: 1\r\n" * 150 + b"\r\n"
    with pytest.raises(Truncated):
        await copy_chunked(_reader(body), MemoryWriter())


async def test_copy_chunked_waits_for_data_arriving_later() -> None:
    reader = asyncio.StreamReader()
    writer = MemoryWriter()
    task = asyncio.ensure_future(copy_chunked(reader, writer))
    reader.feed_data(b"3\r\nab")
    await asyncio.sleep(0)
    assert not task.done()
    reader.feed_data(b"c\r\n0\r\n\r\n")
    assert await asyncio.wait_for(task, 2) == len(b"3\r\nabc\r\n0\r\n\r\n")
    assert bytes(writer.data) == b"3\r\nabc\r\n0\r\n\r\n"
