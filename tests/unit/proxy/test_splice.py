"""relay.proxy.splice over real loopback sockets: a visitor connection and a backend connection, each a
SocketStream at the relay, joined in their callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from relay.proxy.splice import Splice
from relay.socketstream import SocketStream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Joined:
    splice: Splice
    run: asyncio.Task[tuple[int, int]]
    visitor: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    counted: list[int]


@contextlib.asynccontextmanager
async def joined(
    backend: Handler, *, linger: float = 5.0, stall: float | None = 5.0
) -> AsyncIterator[Joined]:
    """A visitor (asyncio streams) → relay side A ⇄ relay side B → ``backend``, spliced at the relay."""
    loop = asyncio.get_running_loop()
    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    accepted: asyncio.Future[SocketStream] = loop.create_future()

    def factory() -> SocketStream:
        stream = SocketStream(limit=64 * 1024)
        loop.call_soon(accepted.set_result, stream)
        return stream

    front = await loop.create_server(factory, "127.0.0.1", 0)
    visitor = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
    a = await accepted
    _, b = await loop.create_connection(
        lambda: SocketStream(limit=64 * 1024), "127.0.0.1", back.sockets[0].getsockname()[1]
    )
    counted = [0, 0]

    def count(i: int) -> Callable[[int], None]:
        return lambda n: counted.__setitem__(i, counted[i] + n)

    splice = Splice((a, a), (b, b), count=(count(0), count(1)), linger=linger, stall=stall)
    run = asyncio.ensure_future(splice.run())
    try:
        yield Joined(splice, run, visitor, counted)
    finally:
        visitor[1].close()
        run.cancel()
        with contextlib.suppress(BaseException):
            await run
        with contextlib.suppress(ConnectionError):
            await visitor[1].wait_closed()
        for server in (front, back):
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0.05)  # the backend handlers' transports finish closing


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_bytes_flow_both_ways_and_are_counted() -> None:
    async with joined(echo) as j:
        reader, writer = j.visitor
        for size in (1, 1000, 300_000):
            writer.write(b"x" * size)
            assert await asyncio.wait_for(reader.readexactly(size), 5) == b"x" * size
        writer.write_eof()  # the visitor is done: passed on, the backend closes, the splice ends
        assert await asyncio.wait_for(j.run, 5) == (300_001 + 1000, 300_001 + 1000)
        assert j.counted == [301_001, 301_001]


async def test_a_half_close_passes_and_the_other_side_may_still_answer() -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.read()  # until the visitor's EOF arrives here
        writer.write(b"got " + got)
        writer.close()

    async with joined(answer_after_eof) as j:
        reader, writer = j.visitor
        writer.write(b"hello")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"got hello"
        assert await asyncio.wait_for(j.run, 5) == (5, 9)


async def test_a_close_is_passed_on_and_the_splice_ends_when_both_are_done() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # a FIN: to the relay, a half-close like any other

    async with joined(close_at_once, linger=60) as j:
        reader, writer = j.visitor
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await asyncio.wait_for(j.run, 5)  # not the 60 s linger


async def test_a_reset_side_ends_the_splice_at_once() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: a RST, the connection is gone

    async with joined(reset, linger=60) as j:
        await asyncio.wait_for(j.run, 5)
        assert await asyncio.wait_for(j.visitor[0].read(), 5) == b""


async def test_a_receiver_that_stops_reading_holds_the_sender_back_then_ends_it() -> None:
    stop = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()
        writer.close()

    async with joined(never_reads, stall=0.5) as j:
        _, writer = j.visitor
        sent = 0
        with contextlib.suppress(ConnectionError):
            for _ in range(400):  # up to 100 MiB, if nothing held the visitor back
                writer.write(b"y" * 262_144)
                await asyncio.wait_for(writer.drain(), 3)
                sent += 262_144
        await asyncio.wait_for(j.run, 10)
        assert j.counted[0] < 40 * 1024 * 1024, "the relay buffered what the backend did not read"
        stop.set()


async def test_the_splice_may_be_cut_from_outside() -> None:
    async with joined(echo, linger=60) as j:
        j.splice._stop()  # what revoking the share does (through the upgrade's close)
        await asyncio.wait_for(j.run, 5)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(j.visitor[0].readexactly(1), 5)
