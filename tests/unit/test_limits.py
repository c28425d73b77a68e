"""The pure parts of hardening: named limits and their overrides, admission caps, progress
deadlines, the per-tunnel channel cap and the pumps' idle timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import resource
from dataclasses import replace as replace_tunnel

import pytest

from relay.admission import EARLY_DROP_RATE, Gate, Refusal, early_drop_chance, network_of, raise_fd_limit
from relay.deadline import Deadline
from relay.errors import BadRequest, ServiceUnavailable
from relay.limits import Limits, describe, parse_overrides
from relay.pump import copy_exact
from relay.ssh.channels import ChannelStream
from relay.tunnels import Stream, Tunnel, UserStreams

# -- Limits ------------------------------------------------------------------------------------------


def test_every_limit_is_documented_with_a_unit() -> None:
    rows = describe()
    assert [r[0] for r in rows] == [f.name for f in dataclasses.fields(Limits)]
    for name, default, unit, doc in rows:
        assert unit in ("s", "count", "bytes"), name
        assert len(doc) > 20 and default, name


def test_overrides_parse_by_field_type() -> None:
    assert parse_overrides(["http_head_timeout=2.5", "http-max-headers=50"]) == {
        "http_head_timeout": 2.5,
        "http_max_headers": 50,
    }
    limits = Limits().with_overrides(["ssh_max_channels_per_tunnel=3"])
    assert limits.ssh_max_channels_per_tunnel == 3
    assert limits.http_head_timeout == Limits().http_head_timeout


@pytest.mark.parametrize(
    "item",
    [
        "nope=1",
        "http_head_timeout",
        "http_max_headers=1.5",
        "http_max_headers=-1",
        "http_max_headers=\u0661",  # an Arabic-Indic digit: isdigit() but not a number we accept
        "http_head_timeout=abc",
        "http_head_timeout=\u0661",
    ],
)
def test_bad_overrides_are_refused_by_name(item: str) -> None:
    with pytest.raises(BadRequest):
        Limits().with_overrides([item])


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_limits_must_be_positive_and_finite(value: str) -> None:
    with pytest.raises(BadRequest, match="http_head_timeout"):
        Limits().with_overrides([f"http_head_timeout={value}"])


# -- Gate ------------------------------------------------------------------------------------------


def test_gate_caps_per_address_then_total_and_releases() -> None:
    gate = Gate(total=3, per_address=2)
    assert gate.enter("a") is None
    assert gate.enter("a") is None
    assert gate.enter("a") is Refusal.PER_ADDRESS
    assert gate.enter("b") is None
    assert gate.enter("c") is Refusal.TOTAL
    gate.leave("a")
    assert gate.enter("c") is None
    assert len(gate) == 3 and gate.count("a") == 1


def test_gate_exempt_address_still_counts_toward_total() -> None:
    gate = Gate(total=3, per_address=1)
    for _ in range(3):
        assert gate.enter("proxy", exempt_per_address=True) is None
    assert gate.enter("proxy", exempt_per_address=True) is Refusal.TOTAL


def test_gate_forgets_addresses_with_nothing_open() -> None:
    gate = Gate(total=10, per_address=10)
    gate.enter("a")
    gate.leave("a")
    assert gate.count("a") == 0 and len(gate) == 0 and not gate._by_address
    with pytest.raises(ValueError):
        gate.leave("a")


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.7", "203.0.113.0/24"),
        ("203.0.113.255", "203.0.113.0/24"),
        ("127.0.5.2", "127.0.5.0/24"),
        ("::ffff:203.0.113.9", "203.0.113.0/24"),  # a v4 client on a dual-stack socket
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
        ("", ""),
    ],
)
def test_network_of_is_the_slash24_or_slash64(address: str, network: str) -> None:
    assert network_of(address) == network


def test_gate_caps_per_network_across_addresses() -> None:
    gate = Gate(total=100, per_address=2, per_network=3)
    assert [gate.enter(f"10.0.0.{n}") for n in range(1, 4)] == [None] * 3
    assert gate.enter("10.0.0.4") is Refusal.PER_NETWORK  # a fresh address, the same /24
    assert gate.enter("10.0.1.1") is None  # another network still gets in
    assert gate.network_count("10.0.0.99") == 3
    assert gate.enter("proxy", exempt_per_address=True) is None  # a trusted proxy is exempt
    gate.leave("10.0.0.2")
    assert gate.enter("10.0.0.4") is None
    for n in (1, 3, 4):
        gate.leave(f"10.0.0.{n}")
    assert gate.network_count("10.0.0.1") == 0 and "10.0.0.0/24" not in gate._by_network


@pytest.mark.parametrize(
    ("count", "chance"),
    [
        (0, 0.0),
        (59, 0.0),
        (60, EARLY_DROP_RATE),
        (80, EARLY_DROP_RATE + (1 - EARLY_DROP_RATE) / 2),
        (100, 1.0),
    ],
)
def test_early_drop_chance_rises_linearly_from_start_to_full(count: int, chance: float) -> None:
    assert early_drop_chance(count, start=60, full=100) == pytest.approx(chance)


def test_gate_drops_early_by_the_draw_and_never_below_start() -> None:
    draws = iter([0.99, 0.1, 0.5])
    gate = Gate(total=10, per_address=10, per_network=10, early_drop=2, draw=lambda: next(draws))
    assert gate.enter("a") is None and gate.enter("b") is None  # below start: no draw taken
    assert gate.enter("c") is None  # chance 0.3 at start, drew 0.99
    assert gate.enter("d") is Refusal.EARLY_DROP  # chance 0.3875 at 3 of 10, drew 0.1
    assert gate.enter("d") is None  # the same chance, drew 0.5
    assert len(gate) == 4 and next(draws, None) is None


def test_fd_limit_is_raised_toward_what_the_caps_need_but_never_past_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(1) == (soft, 1)  # never lowered
    if hard != resource.RLIM_INFINITY and soft < hard:
        assert raise_fd_limit(soft + 1)[0] == soft + 1
        assert raise_fd_limit(hard + 10) == (hard, hard + 10)  # the caller warns


# -- Deadline --------------------------------------------------------------------------------------


async def test_deadline_expires_without_progress() -> None:
    with pytest.raises(TimeoutError):
        async with Deadline(0.05):
            await asyncio.sleep(5)


async def test_deadline_moves_with_progress() -> None:
    async with Deadline(0.15) as due:
        for _ in range(6):  # 0.3 s in all, never 0.15 s without progress
            await asyncio.sleep(0.05)
            due.extend()
    assert not due.expired


async def test_deadline_can_be_shortened_and_none_never_expires() -> None:
    with pytest.raises(TimeoutError):
        async with Deadline(60) as due:
            due.extend(0.05)
            await asyncio.sleep(5)
    async with Deadline(None) as never:
        never.extend()
        await asyncio.sleep(0.01)


async def test_deadline_does_not_swallow_an_outside_cancel() -> None:
    async def body() -> None:
        async with Deadline(60):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- Tunnel channel cap ----------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.closed = False
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def write_eof(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _tunnel(cap: int) -> Tunnel:
    async def opener() -> Stream:
        return Stream(ChannelStream(), _Sink())

    return Tunnel(host="t.localhost", user_id=1, user_name="t", client="c", opener=opener, max_channels=cap)


async def test_channel_cap_refuses_at_once_and_frees_on_close() -> None:
    tunnel = _tunnel(2)
    a = await tunnel.open_stream()
    b = await tunnel.open_stream()
    with pytest.raises(ServiceUnavailable) as info:
        await tunnel.open_stream()
    assert info.value.status == 503 and info.value.retry_after > 0
    a.close()
    a.close()  # counted once however often it is closed
    assert tunnel.channels == 1
    await tunnel.open_stream()
    assert tunnel.channels == 2
    b.close()


async def test_channel_cap_closes_an_idle_kept_channel_to_make_room() -> None:
    tunnel = _tunnel(1)
    kept = await tunnel.open_stream()
    tunnel.park(kept)
    fresh = await tunnel.open_stream()
    assert kept.writer.is_closing() and not fresh.writer.is_closing()
    assert tunnel.channels == 1


async def test_streams_are_capped_per_user_across_all_their_tunnels() -> None:
    users = UserStreams(3)
    mine = [replace_tunnel(_tunnel(10), host=f"m{n}.localhost", user_streams=users) for n in range(2)]
    other = replace_tunnel(_tunnel(10), host="o.localhost", user_id=2, user_streams=users)
    streams = [await mine[0].open_stream(), await mine[1].open_stream(), await mine[0].open_stream()]
    with pytest.raises(ServiceUnavailable, match="per user"):
        await mine[1].open_stream()  # another tunnel of the same user: the same budget
    assert (await other.open_stream()) is not None  # another user is unaffected
    streams[0].close()
    assert users.count(1) == 2
    await mine[1].open_stream()
    assert users.count(1) == 3 and users.count(2) == 1


async def test_the_user_cap_closes_an_idle_kept_channel_of_the_tunnel_to_make_room() -> None:
    users = UserStreams(1)
    tunnel = replace_tunnel(_tunnel(10), user_streams=users)
    kept = await tunnel.open_stream()
    tunnel.park(kept)
    fresh = await tunnel.open_stream()
    assert kept.writer.is_closing() and not fresh.writer.is_closing() and users.count(1) == 1


async def test_failed_open_does_not_leak_a_channel() -> None:
    async def refuse() -> Stream:
        raise ConnectionRefusedError

    users = UserStreams(1)
    tunnel = Tunnel(
        host="t", user_id=1, user_name="t", client="c", opener=refuse, max_channels=1, user_streams=users
    )
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await tunnel.open_stream()
    assert tunnel.channels == 0 and users.count(1) == 0


# -- pump idle timeouts ------------------------------------------------------------------------------


async def test_copy_exact_gives_up_on_a_silent_sender() -> None:
    src = asyncio.StreamReader()
    src.feed_data(b"abc")
    with pytest.raises(TimeoutError):
        await copy_exact(src, _Sink(), 10, idle=0.1)


async def test_copy_exact_keeps_going_while_bytes_trickle_in() -> None:
    src = asyncio.StreamReader()
    sink = _Sink()

    async def trickle() -> None:
        for _ in range(5):
            await asyncio.sleep(0.04)
            src.feed_data(b"xx")

    feeder = asyncio.ensure_future(trickle())
    assert await copy_exact(src, sink, 10, idle=0.1) == 10
    await feeder
    assert bytes(sink.data) == b"x" * 10
