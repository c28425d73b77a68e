"""A connection's watchdog: each wait times out as a Deadline of its own would, on one timer."""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.deadline import Watchdog


def dog(floor: float) -> Watchdog:
    task = asyncio.current_task()
    assert task is not None
    return Watchdog(asyncio.get_running_loop(), task, floor)


async def test_a_wait_times_out_after_its_span() -> None:
    watch = dog(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with watch(0.3):
            await asyncio.sleep(5)
    assert 0.25 <= time.monotonic() - started < 1.5
    watch.close()


async def test_many_short_waits_then_a_long_one_do_not_expire_early() -> None:
    watch = dog(0.1)
    for _ in range(50):  # each leaves the timer as it was
        async with watch(0.1):
            await asyncio.sleep(0)
    async with watch(0.6):
        await asyncio.sleep(0.35)  # several ticks of the floor, within its own span
    watch.close()


async def test_extend_moves_the_due_time() -> None:
    watch = dog(0.2)
    async with watch(0.3) as due:
        for _ in range(4):
            await asyncio.sleep(0.15)
            due.extend()  # progress: 0.6 s in all, never 0.3 s without it
    with pytest.raises(TimeoutError):
        async with watch(0.3) as due:
            due.extend(0.05)  # shorter than the floor: the timer is re-armed for it
            await asyncio.sleep(5)
    watch.close()


async def test_a_wait_shorter_than_the_floor_still_expires_on_time() -> None:
    watch = dog(10.0)
    async with watch(10.0):
        pass  # the timer is armed 10 s out
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with watch(0.1):
            await asyncio.sleep(5)
    assert time.monotonic() - started < 1.0
    watch.close()


async def test_no_wait_no_timeout_and_waits_do_not_nest() -> None:
    watch = dog(0.05)
    async with watch(None):
        await asyncio.sleep(0.15)
    async with watch(1.0):
        with pytest.raises(RuntimeError):
            watch(1.0)
    watch.close()


async def test_an_outside_cancel_is_not_turned_into_a_timeout() -> None:
    async def wait() -> None:
        watch = dog(0.05)
        try:
            async with watch(0.1):
                await asyncio.sleep(5)
        finally:
            watch.close()

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
