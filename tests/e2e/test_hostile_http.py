"""Hostile input over raw sockets, against a real relay configured with short limits, a real OpenSSH
``ssh -R`` and backends that misbehave on purpose. Each test names the limit it exercises
(relay/limits.py) and checks the status the visitor gets and, where it applies, that the backend saw
nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .conftest import unique_name
from .harness import (
    Backend,
    HostileBackend,
    RelayProcess,
    SshTunnel,
    connect_from,
    limit_args,
    open_tunnel,
    read_until_closed,
    relay_rss_kib,
    start_relay,
)

LIMITS = {
    "http_head_timeout": "1",
    "http_keepalive_timeout": "1.5",
    "http_body_idle_timeout": "1",
    "http_max_head_bytes": "8192",
    "http_max_headers": "20",
    "upstream_response_timeout": "1.5",
    "stream_idle_timeout": "1.5",
    "ssh_max_channels_per_tunnel": "2",
    "auth_failure_limit": "3",
    "auth_failure_window": "30",
}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    workdir = tmp_path_factory.mktemp("hostile")
    workdir.chmod(0o700)
    proc = start_relay(workdir, extra=limit_args(LIMITS))
    yield proc
    proc.stop()


class Site:
    def __init__(self, name: str, token: str, tunnel: SshTunnel) -> None:
        self.name, self.token, self.tunnel = name, token, tunnel
        self.host = f"{name}.localhost"

    def request(self, path: str, *, extra: str = "", method: str = "GET", close: bool = True) -> bytes:
        """A raw request; ``close`` asks for Connection: close, so reading until EOF takes no wait."""
        extra += "Connection: close\r\n" if close else ""
        return (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nX-Relay-Token: {self.token}\r\n{extra}\r\n"
        ).encode()


@pytest.fixture
async def hostile() -> AsyncIterator[HostileBackend]:
    backend = HostileBackend()
    await backend.start()
    yield backend
    await backend.stop()


@pytest.fixture
async def site(relay: RelayProcess, hostile: HostileBackend) -> AsyncIterator[Site]:
    name = unique_name("hx")
    token = relay.add_user(name)
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{hostile.port}", token=token)
    yield Site(name, token, tunnel)
    await tunnel.close()


async def exchange(relay: RelayProcess, data: bytes, *, source: str = "127.0.0.1") -> tuple[bytes, bool]:
    reader, writer = await connect_from(relay.http_port, source)
    writer.write(data)
    await writer.drain()
    out, closed = await read_until_closed(reader)
    writer.close()
    return out, closed


def statuses(out: bytes) -> list[int]:
    # Unanchored: a response can follow the previous body on the same line ("okHTTP/1.1 502").
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]


# -- the visitor side: heads, keep-alive, bodies ------------------------------------------------


async def test_slow_head_is_cut_at_http_head_timeout(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    reader, writer = await connect_from(relay.http_port)
    head = site.request("/ok")
    closed_early = False
    for i in range(len(head) - 1):  # a slowloris: one byte every 0.2 s, never the end of the head
        try:
            writer.write(head[i : i + 1])
            await writer.drain()
        except ConnectionError:
            closed_early = True
            break
        if reader.at_eof():
            closed_early = True
            break
        await asyncio.sleep(0.2)
        if i > 60:  # 12 s: far past the 1 s limit
            break
    out, closed = await read_until_closed(reader, timeout=5)
    writer.close()
    assert closed_early or closed
    assert statuses(out) == []
    assert hostile.requests == []


async def test_silent_connection_is_closed(relay: RelayProcess) -> None:
    reader, writer = await connect_from(relay.http_port)
    out, closed = await read_until_closed(reader, timeout=10)
    writer.close()
    assert closed and out == b""


async def test_idle_keepalive_connection_is_closed_after_its_request(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    out, closed = await exchange(relay, site.request("/ok", close=False))
    assert statuses(out) == [200] and out.endswith(b"ok")
    assert closed  # by http_keepalive_timeout, without another request
    assert hostile.paths() == ["/ok"]


async def test_oversized_head_and_too_many_headers_get_431(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    big, _ = await exchange(relay, site.request("/ok", extra=f"X-Big: {'a' * 9000}\r\n"))
    assert statuses(big) == [431]
    many, _ = await exchange(relay, site.request("/ok", extra="".join(f"X-{i}: v\r\n" for i in range(25))))
    assert statuses(many) == [431]
    assert hostile.requests == []


@pytest.mark.parametrize("keepalive", [False, True], ids=["first", "after-a-request"])
async def test_bare_lf_head_gets_400_at_once(
    relay: RelayProcess, site: Site, hostile: HostileBackend, keepalive: bool
) -> None:
    """Not after http_head_timeout: the CRLFCRLF a bare-LF head never sends is not waited for."""
    data = f"GET /ok HTTP/1.1\nHost: {site.host}\nX-Relay-Token: {site.token}\n\n".encode()
    if keepalive:
        data = site.request("/ok", close=False) + data
    started = asyncio.get_running_loop().time()
    out, closed = await exchange(relay, data)
    took = asyncio.get_running_loop().time() - started
    assert closed and statuses(out) == ([200, 400] if keepalive else [400])
    assert took < 0.8  # http_head_timeout is 1 s in this module
    assert hostile.paths().count("/ok") == (1 if keepalive else 0)


async def test_mixed_line_ends_are_never_forwarded(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    data = f"GET /mixed HTTP/1.1\r\nHost: {site.host}\nX-Relay-Token: {site.token}\n\n".encode()
    out, closed = await exchange(relay, data)
    assert closed and statuses(out) in ([], [400])
    assert "/mixed" not in hostile.paths()


async def test_stalled_upload_closes_the_connection(relay: RelayProcess, site: Site) -> None:
    reader, writer = await connect_from(relay.http_port)
    writer.write(site.request("/ok", method="POST", extra="Content-Length: 100\r\n") + b"x" * 10)
    await writer.drain()
    out, closed = await read_until_closed(reader)  # http_body_idle_timeout, then closed
    writer.close()
    assert closed
    assert statuses(out) == []  # nothing pretends the request was complete


# -- the upstream side ----------------------------------------------------------------------------


async def test_backend_that_never_answers_gets_504(relay: RelayProcess, site: Site) -> None:
    out, closed = await exchange(relay, site.request("/never", close=False))
    assert statuses(out) == [504] and closed
    assert b"Connection: close" in out


@pytest.mark.parametrize("path", ["/garbage", "/big-head", "/cl-te", "/dup-cl"])
async def test_broken_backend_answers_get_502_and_the_channel_is_not_reused(
    relay: RelayProcess, site: Site, hostile: HostileBackend, path: str
) -> None:
    out, closed = await exchange(
        relay, site.request("/ok", close=False) + site.request(path, close=False) + site.request("/ok")
    )
    assert statuses(out) == [200, 502], out[-300:]
    assert b"smuggled" not in out
    assert closed
    # The next request starts on a new channel: the broken one is never reused.
    again, _ = await exchange(relay, site.request("/ok"))
    assert statuses(again) == [200]
    assert hostile.requests == [(1, "/ok"), (1, path), (2, "/ok")]


async def test_truncated_body_closes_the_visitor_connection(relay: RelayProcess, site: Site) -> None:
    out, closed = await exchange(relay, site.request("/truncate", close=False) + site.request("/ok"))
    assert statuses(out) == [200]
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 100000" in head
    assert closed and len(body) < 100000  # the visitor can tell: fewer bytes than announced, then EOF


async def test_stalled_response_body_is_closed(relay: RelayProcess, site: Site) -> None:
    out, closed = await exchange(relay, site.request("/stall-body"))
    assert statuses(out) == [200] and closed  # stream_idle_timeout
    assert len(out.partition(b"\r\n\r\n")[2]) < 100_000


async def test_a_small_body_cut_or_stalled_before_anything_was_sent_is_an_error(
    relay: RelayProcess, site: Site
) -> None:
    # A small body is sent with its head in one write, so nothing has reached the visitor yet when
    # the backend fails: it gets an honest error status instead of a short 200.
    out, closed = await exchange(relay, site.request("/truncate-small", close=False) + site.request("/ok"))
    assert statuses(out) == [502] and closed
    out, closed = await exchange(relay, site.request("/stall-small"))
    assert statuses(out) == [504] and closed


async def test_backend_hangup_gives_502_and_the_request_is_not_retried(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    out, _ = await exchange(relay, site.request("/ok", close=False) + site.request("/hangup"))
    assert statuses(out) == [200, 502]
    # Sent once on the kept channel, never again on another one.
    assert hostile.paths() == ["/ok", "/hangup"]


async def test_client_killed_while_a_request_waits_gives_502(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    pending = asyncio.ensure_future(exchange(relay, site.request("/never")))
    for _ in range(200):
        if hostile.requests:
            break
        await asyncio.sleep(0.02)
    site.tunnel.kill()  # its SSH connection drops under the open channel
    out, closed = await pending
    assert statuses(out) == [502] and closed
    assert b"disconnected" in out


async def test_channel_cap_answers_503_with_retry_after_at_once(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    waiting = [asyncio.ensure_future(exchange(relay, site.request("/never"))) for _ in range(2)]
    for _ in range(200):
        if len(hostile.requests) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(hostile.requests) == 2  # both channels of the cap (2) are busy
    out, _ = await exchange(relay, site.request("/ok"))
    assert statuses(out) == [503]
    assert re.search(rb"\r\nRetry-After: \d+\r\n", out)
    assert not any(t.done() for t in waiting)  # answered while the two were still in flight
    assert [s for t in await asyncio.gather(*waiting) for s in statuses(t[0])] == [504, 504]
    assert hostile.paths() == ["/never", "/never"]  # the refused request reached nothing
    after, _ = await exchange(relay, site.request("/ok"))
    assert statuses(after) == [200]  # the cap frees up when those channels close


async def test_slow_reader_does_not_make_the_relay_buffer(
    relay: RelayProcess, backend: Backend, tmp_path: Path
) -> None:
    name = unique_name("slow")
    token = relay.add_user(name)
    tunnel = await open_tunnel(relay, name, f"{name}:80:127.0.0.1:{backend.port}", token=token)
    try:
        before = relay_rss_kib(relay)
        reader, writer = await connect_from(relay.http_port)
        writer.write(
            f"GET /download?size={300 * 2**20} HTTP/1.1\r\nHost: {name}.localhost\r\n"
            f"X-Relay-Token: {token}\r\n\r\n".encode()
        )
        await writer.drain()
        await reader.read(1000)  # the response has started
        await asyncio.sleep(2.5)  # 300 MB are waiting; the visitor reads nothing
        during = relay_rss_kib(relay)
        out, closed = await read_until_closed(reader, timeout=10)
        writer.close()
        # Bounded by the SSH window (2 MiB) and socket buffers, not by the 300 MB body.
        assert during - before < 32 * 1024, (before, during)
        # And a stream that made no progress for stream_idle_timeout (1.5 s) was closed.
        assert closed and len(out) < 300 * 2**20
    finally:
        await tunnel.close()


# -- connection caps and brute force (their own relay: they fill its counters) ----------------


async def test_connection_caps_total_and_per_address(workdir: Path) -> None:
    relay = start_relay(
        workdir,
        extra=limit_args(
            {"http_max_connections": "5", "http_max_connections_per_address": "3", "http_head_timeout": "30"}
        ),
    )
    held = []
    try:
        for _ in range(3):
            held.append(await connect_from(relay.http_port, "127.0.0.1"))
        out, closed = await exchange(relay, b"", source="127.0.0.1")
        assert statuses(out) == [429] and closed
        assert re.search(rb"\r\nRetry-After: \d+\r\n", out)
        for _ in range(2):
            held.append(await connect_from(relay.http_port, "127.0.0.2"))
        out, closed = await exchange(relay, b"", source="127.0.0.3")
        assert statuses(out) == [503] and closed
        assert re.search(rb"\r\nRetry-After: \d+\r\n", out)
        # The connections already admitted are still served.
        reader, writer = held[0]
        writer.write(b"GET /_relay/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line.startswith(b"HTTP/1.1 200")
        # Closing one frees its place.
        held.pop()[1].close()
        await asyncio.sleep(0.3)
        health = b"GET /_relay/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        out, _ = await exchange(relay, health, source="127.0.0.3")
        assert statuses(out)[:1] == [200]
    finally:
        for _, writer in held:
            writer.close()
        relay.stop()


@pytest.mark.parametrize(
    ("action", "method", "first"),
    [("extra", "GET", 200), ("head-body", "HEAD", 200), ("no-content", "GET", 204), ("switch", "GET", 502)],
)
async def test_a_backend_that_answers_twice_never_reaches_the_next_request(
    relay: RelayProcess, site: Site, hostile: HostileBackend, action: str, method: str, first: int
) -> None:
    """The backend keeps its connection open after a second, unasked-for response; the relay must
    not put that channel back: the visitor's next request gets its own answer on a new channel."""
    data = site.request(f"/{action}", method=method, close=False) + site.request("/ok")
    out, closed = await exchange(relay, data)
    assert closed and b"smuggled" not in out
    if first == 502:  # a 101 to a request without upgrade: the visitor connection ends there
        assert statuses(out) == [502]
        return
    assert statuses(out) == [first, 200] and out.endswith(b"ok")
    numbers = dict((path, n) for n, path in hostile.requests)
    assert numbers[f"/{action}"] != numbers["/ok"], "the unclean channel was reused"


async def test_twenty_addresses_of_one_network_cannot_fill_the_front(workdir: Path) -> None:
    """Idle sockets from twenty addresses of one /24 take that network's share; a visitor from
    another network is still served (the per-address cap alone would let them fill the relay)."""
    limits = {
        "http_max_connections": "60",
        "http_max_connections_per_address": "4",
        "http_max_connections_per_network": "12",
        "http_early_drop_connections": "60",  # = the total: no random refusals here
        "http_head_timeout": "30",
    }
    relay = start_relay(workdir, extra=limit_args(limits))
    held: list[tuple[bytes, asyncio.StreamWriter]] = []
    refused: list[tuple[bytes, asyncio.StreamWriter]] = []
    try:
        for host in range(2, 22):
            for _ in range(4):
                reader, writer = await connect_from(relay.http_port, f"127.0.7.{host}")
                out, closed = await read_until_closed(reader, timeout=0.2)
                (refused if closed else held).append((out, writer))
        assert len(held) == 12 and len(refused) == 80 - 12
        assert all(statuses(out) == [429] and b"your network" in out for out, _ in refused)
        health = b"GET /_relay/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        out, _ = await exchange(relay, health, source="127.0.8.1")
        assert statuses(out)[:1] == [200]
    finally:
        for _, writer in held + refused:
            writer.close()
        relay.stop()


async def test_failed_tokens_are_rate_limited_per_address_without_locking_the_account(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    attacker = "127.0.0.9"
    bad = site.request("/ok").replace(site.token.encode(), site.token[:-4].encode() + b"xxxx")
    seen = []
    for _ in range(4):
        out, _ = await exchange(relay, bad + b"", source=attacker)
        seen += statuses(out)
    assert seen == [401, 401, 401, 429]
    out, _ = await exchange(relay, site.request("/ok"), source=attacker)
    assert statuses(out) == [429]  # even a good token, from that address, for the window
    assert re.search(rb"\r\nRetry-After: \d+\r\n", out)
    out, _ = await exchange(relay, site.request("/ok"), source="127.0.0.10")
    assert statuses(out) == [200]  # the account itself is not locked
    assert hostile.paths() == ["/ok"]


# -- logs -----------------------------------------------------------------------------------------


async def test_one_escaped_log_line_per_request_and_no_secrets(
    relay: RelayProcess, site: Site, hostile: HostileBackend
) -> None:
    marker = unique_name("logmark")
    secrets = [site.token, "sessioncookievalue1234"]
    requests = [
        # A valid header token and relay cookies: allowed, forwarded, never logged.
        site.request(f"/ok/{marker}/1", extra=f"Cookie: relay_session={secrets[1]}; app=1\r\n"),
        # A query token on a tunnel URL: exchanged for a cookie (303); the query is never logged.
        f"GET /{marker}/2?relay_token={site.token} HTTP/1.1\r\nHost: {site.host}\r\n"
        "Connection: close\r\n\r\n".encode(),
        # A bad cookie: one line for the request, none for the cookie.
        f"GET /{marker}/3 HTTP/1.1\r\nHost: {site.host}\r\nCookie: relay_session=nope\r\n"
        "Connection: close\r\n\r\n".encode(),
        # Bytes that would forge a log line or move a terminal if written raw (UTF-8 RLO, ESC-like).
        f"GET /{marker}/4/".encode()
        + "\u202e\u00e9".encode()
        + b" HTTP/1.1\r\n"
        + f"Host: {site.host}\r\nConnection: close\r\n\r\n".encode(),
    ]
    for data in requests:
        await exchange(relay, data)
    await asyncio.sleep(0.3)
    text = relay.log_text()
    lines = [ln for ln in text.splitlines() if marker in ln]
    assert len(lines) == 4, lines
    assert all("event=http.request" in ln for ln in lines)
    assert all(secret not in text for secret in secrets)
    assert "relay_token" not in text
    assert "\u202e" not in text and "\\xe2\\x80\\xae" in lines[3]
