"""The relay's log handler: lines formatted as they come, written in batches.

One access line per request is the contract (docs/protocol.md), and one ``write()`` per line was a
syscall per request. Access lines (the ``relay.access`` logger) logged during one pass of the event
loop leave together at the end of it (``call_soon``: no delay beyond the pass). Every other line —
events, warnings — is written at once, after the access lines before it, so the order of the log is
the order of events. ``logging.shutdown`` (at exit) flushes what is left; only a SIGKILL can lose the lines
of the pass it interrupts.

Lines of :func:`relay.logfmt.emit` may skip the ``logging`` machinery (a ``LogRecord`` per line
cost a third of a request's log line): when :func:`direct_sink` finds this handler installed as
the only one such a line would reach, with no filter on the way, the line is formatted here with
the same format and batched the same way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TextIO

#: A batch this large is written at once (bytes of text).
MAX_BATCH = 64 * 1024


#: The logger whose lines are batched.
BATCHED = "relay.access"


class BatchedStreamHandler(logging.Handler):
    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._scheduled = False
        self._guard = threading.RLock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._add(text, record.name, record.levelno)

    def write_line(self, name: str, level: int, message: str) -> None:
        """The line a record of logger ``name`` at ``level`` with ``message`` would give, without one."""
        formatter = self.formatter
        assert isinstance(formatter, LineFormatter)
        text = formatter.line(name, level, message, time.time()) + "\n"
        self._add(text, name, level)

    def install_direct(self) -> None:
        """Let :func:`direct_sink` hand lines straight to this handler (the relay's own log)."""
        global _direct
        if not isinstance(self.formatter, LineFormatter):
            raise ValueError("direct lines need a LineFormatter")
        _direct = self

    def _add(self, text: str, name: str, level: int) -> None:
        with self._guard:  # a thread may log too (the store writer), and flush swaps the list
            self._lines.append(text)
            self._size += len(text)
        if name != BATCHED or level >= logging.WARNING or self._size >= MAX_BATCH:
            self.flush()
            return
        if not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: nothing to batch with
                self.flush()
                return
            self._scheduled = True

    def flush(self) -> None:
        with self._guard:
            self._scheduled = False
            if not self._lines:
                return
            text, self._lines, self._size = "".join(self._lines), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must not stop the relay
            pass


_direct: BatchedStreamHandler | None = None


def direct_sink(logger: logging.Logger) -> BatchedStreamHandler | None:
    """The installed handler, if a line of ``logger`` would reach it alone and unfiltered."""
    sink = _direct
    if sink is None or sink.filters:
        return None
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or handlers[0] is not sink or logging.root.filters:
        return None
    return sink


class LineFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, with the date and time formatted once per second, not per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
        return f"{self._stamp},{int(msecs):03d}"

    def line(self, name: str, level: int, message: str, created: float) -> str:
        """What :meth:`format` gives for such a record (``LogRecord``'s msecs rule included)."""
        msecs = int((created - int(created)) * 1000) + 0.0
        return f"{self._time(created, msecs)} {logging.getLevelName(level)} {name}: {message}"
