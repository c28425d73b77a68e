"""relay.logwriter: access lines of one event-loop pass leave in one write; other lines at once, in order."""

from __future__ import annotations

import asyncio
import io
import logging

from relay.logwriter import BATCHED, BatchedStreamHandler, LineFormatter


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


async def test_access_lines_of_one_pass_leave_together_and_events_keep_their_order() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    for i in range(5):
        handler.emit(_record(BATCHED, f"request {i}"))
    assert stream.getvalue() == ""
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == [f"request {i}" for i in range(5)]
    assert stream.writes == 1
    handler.emit(_record(BATCHED, "request 5"))
    handler.emit(_record("relay.ssh.server", "tunnel.up"))  # not batched: flushes what is before it
    assert stream.getvalue().splitlines()[-2:] == ["request 5", "tunnel.up"]


async def test_a_warning_is_written_at_once() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.emit(_record(BATCHED, "a 502", logging.WARNING))
    assert stream.getvalue() == "a 502\n"


def test_without_an_event_loop_every_line_is_written_at_once() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.emit(_record(BATCHED, "one"))
    assert stream.getvalue() == "one\n"


def test_the_time_stamp_matches_the_standard_format() -> None:
    record = _record(BATCHED, "x")
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert LineFormatter().format(record) == standard.format(record)
