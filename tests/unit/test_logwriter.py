"""relay.logwriter: access lines of one event-loop pass leave in one write; other lines at once, in order."""

from __future__ import annotations

import asyncio
import io
import logging

from relay import logwriter
from relay.logfmt import emit
from relay.logwriter import BATCHED, BatchedStreamHandler, LineFormatter, direct_sink


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


def test_a_direct_line_is_the_line_a_record_gives() -> None:
    handler = BatchedStreamHandler(io.StringIO())
    handler.setFormatter(LineFormatter())
    record = _record(BATCHED, "event=http.request status=200", logging.WARNING)
    line = handler.formatter.line(BATCHED, logging.WARNING, record.getMessage(), record.created)  # type: ignore[union-attr]
    assert line == LineFormatter().format(record)


def test_lines_go_direct_only_where_the_handler_alone_would_see_them() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(LineFormatter())
    root, access = logging.getLogger(), logging.getLogger(BATCHED)
    saved = root.handlers[:]
    try:
        root.handlers = [handler]
        assert direct_sink(access) is None  # not installed
        handler.install_direct()
        assert direct_sink(access) is handler
        emit(access, logging.WARNING, "http.request", status=502)
        assert stream.getvalue().endswith(" WARNING relay.access: event=http.request status=502\n")
        other = logging.NullHandler()
        root.addHandler(other)  # a second handler (pytest's caplog): the record path again
        assert direct_sink(access) is None
        root.removeHandler(other)
        access.addFilter(lambda record: False)  # a filter must see the record
        assert direct_sink(access) is None
    finally:
        access.filters.clear()
        root.handlers = saved
        logwriter._direct = None
