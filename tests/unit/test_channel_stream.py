"""relay.ssh.channels.ChannelStream as a reader, fed through asyncssh's session callbacks."""

from __future__ import annotations

import asyncio

import pytest

from relay.ssh.channels import SEARCH_LIMIT, ChannelStream
from relay.tunnels import TunnelLost


async def test_reads_wait_for_what_they_need_and_take_exactly_that() -> None:
    s = ChannelStream()
    waiting = asyncio.ensure_future(s.readuntil(b"\r\n\r\n"))
    for part in (b"HTTP/1.1 200 OK\r\n", b"A: b\r", b"\n\r\nbo"):
        await asyncio.sleep(0)
        assert not waiting.done()
        s.data_received(part, None)
    s.data_received(b"dy", None)
    assert await waiting == b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"
    assert await s.readexactly(4) == b"body"
    s.data_received(b"rest", None)
    s.eof_received()
    assert await s.read(100) == b"rest"
    assert await s.read(100) == b"" and s.at_eof()


async def test_a_separator_split_across_chunks_is_found() -> None:
    s = ChannelStream()
    s.data_received(b"x" * 10 + b"\r\n\r", None)
    waiting = asyncio.ensure_future(s.readuntil(b"\r\n\r\n"))
    await asyncio.sleep(0)
    s.data_received(b"\n", None)
    assert await waiting == b"x" * 10 + b"\r\n\r\n"


async def test_eof_before_the_end_is_an_incomplete_read_with_what_came() -> None:
    s = ChannelStream()
    s.data_received(b"HTTP/1.1 2", None)
    s.eof_received()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await s.readuntil(b"\r\n\r\n")
    assert info.value.partial == b"HTTP/1.1 2"
    with pytest.raises(asyncio.IncompleteReadError):
        await s.readexactly(1)


async def test_no_separator_within_the_limit_is_an_oversized_head() -> None:
    s = ChannelStream()
    s.data_received(b"x" * SEARCH_LIMIT, None)
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await s.readuntil(b"\r\n\r\n")
    assert len(info.value.partial) == SEARCH_LIMIT


async def test_a_lost_link_wakes_a_waiting_read_with_tunnel_lost() -> None:
    s = ChannelStream()
    waiting = asyncio.ensure_future(s.readexactly(10))
    await asyncio.sleep(0)
    s.connection_lost(ConnectionResetError("gone"))
    with pytest.raises(TunnelLost):
        await waiting
    with pytest.raises(TunnelLost):
        s.write(b"more")
