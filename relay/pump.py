"""Moving body bytes: exact lengths, chunked coding (forwarded as-is, tracked to find its end), and
until EOF (after a WebSocket's ``101`` the two sides are spliced instead: :mod:`relay.proxy.splice`).
Every write is followed by ``drain()``, so a slow reader on either side holds the other back
(backpressure) instead of filling memory: what one stream holds is bounded by the SSH window and the
socket buffers. A stream that makes no progress for its ``idle`` seconds ends with
:class:`TimeoutError` instead of holding them forever."""

from __future__ import annotations

import asyncio
import re

from .deadline import Deadline
from .protocol import PUMP_CHUNK
from .tunnels import ByteReader, ByteWriter

_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,15})(?:[ \t]*;[^\r\n]*)?\r\n")
_MAX_LINE = 4096


class Truncated(Exception):
    """The sending side ended (or sent garbage) before the framing said the body was complete."""


async def _exact(src: ByteReader, dst: ByteWriter, length: int, progress: Deadline) -> int:
    remaining = length
    while remaining:
        data = await src.read(min(PUMP_CHUNK, remaining))
        if not data:
            raise Truncated(f"body ended {remaining} bytes short")
        progress.extend()
        dst.write(data)
        await dst.drain()
        progress.extend()
        remaining -= len(data)
    return length


async def copy_exact(src: ByteReader, dst: ByteWriter, length: int, *, idle: float | None = None) -> int:
    """Move exactly ``length`` bytes. ``idle``: seconds a read or a drain may make no progress before
    :class:`TimeoutError` (a silent sender, or a receiver that stopped reading)."""
    async with Deadline(idle) as progress:
        return await _exact(src, dst, length, progress)


async def _read_line(src: ByteReader) -> bytes:
    try:
        line = await src.readuntil(b"\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Truncated("chunked body ended early") from exc
    except asyncio.LimitOverrunError as exc:
        raise Truncated("chunk line too long") from exc
    if len(line) > _MAX_LINE:
        raise Truncated("chunk line too long")
    return line


async def copy_chunked(src: ByteReader, dst: ByteWriter, *, idle: float | None = None) -> int:
    """Forward a chunked body verbatim, validating its framing; returns the bytes moved."""
    async with Deadline(idle) as progress:
        return await _chunked(src, dst, progress)


async def _chunked(src: ByteReader, dst: ByteWriter, progress: Deadline) -> int:
    moved = 0
    while True:
        line = await _read_line(src)
        progress.extend()
        match = _CHUNK_SIZE.fullmatch(line)
        if not match:
            raise Truncated("malformed chunk size line")
        size = int(match.group(1), 16)
        dst.write(line)
        moved += len(line)
        if size == 0:
            break
        moved += await _exact(src, dst, size, progress)
        try:
            crlf = await src.readexactly(2)
        except asyncio.IncompleteReadError as exc:
            raise Truncated("chunked body ended early") from exc
        if crlf != b"\r\n":
            raise Truncated("chunk not followed by CRLF")
        dst.write(crlf)
        moved += 2
    for _ in range(100):  # trailer fields, then the final CRLF
        line = await _read_line(src)
        progress.extend()
        if line[:1] in (b" ", b"\t"):
            raise Truncated("folded trailer line")
        if b"\n" in line[:-2] or b"\r" in line[:-2]:
            # readuntil(CRLF) would pass "X: 1\nY: 2\r\n" along as one line; the next parser
            # might see two fields, or the end of the message, at the bare LF.
            raise Truncated("bare CR or LF in a chunked trailer")
        dst.write(line)
        moved += len(line)
        if line == b"\r\n":
            await dst.drain()
            return moved
    raise Truncated("too many trailer fields")


async def copy_until_eof(src: ByteReader, dst: ByteWriter, *, idle: float | None = None) -> int:
    moved = 0
    async with Deadline(idle) as progress:
        while data := await src.read(PUMP_CHUNK):
            progress.extend()
            dst.write(data)
            await dst.drain()
            progress.extend()
            moved += len(data)
    return moved
