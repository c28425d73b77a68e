"""The relay's log handler: lines formatted as they come, written in batches.

One access line per request is the contract (docs/protocol.md), and one ``write()`` per line was a
syscall per request. Access lines (the ``relay.access`` logger) logged during one pass of the event
loop leave together at the end of it (``call_soon``: no delay beyond the pass). Every other line —
events, warnings — is written at once, after the access lines before it, so the order of the log is
the order of events. ``logging.shutdown`` (at exit) flushes what is left; only a SIGKILL can lose the lines
of the pass it interrupts.
"""

from __future__ import annotations

import asyncio
import logging
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

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._lines.append(text)
        self._size += len(text)
        if record.name != BATCHED or record.levelno >= logging.WARNING or self._size >= MAX_BATCH:
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
        self._scheduled = False
        if not self._lines:
            return
        text, self._lines, self._size = "".join(self._lines), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must not stop the relay
            pass


class LineFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, with the date and time formatted once per second, not per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"
