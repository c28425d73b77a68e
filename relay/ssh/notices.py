"""What one SSH connection keeps to tell its person, and how much it may log: both bounded, so that a
client sending thousands of refused requests costs the relay a fixed amount of memory and log.

Pure (no I/O): the server adds notices and asks the budget before logging; the session prints them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

#: How much of a client-supplied value (a bind address, a name) a reason quotes.
EXCERPT_CHARS = 64


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` in at most ``limit`` characters, marked when cut: reasons quote client input, and
    the client chooses its length (an SSH string may be 32 KiB)."""
    if len(text) <= limit:
        return text
    mark = f"…({len(text)} chars)"
    return text[: limit - len(mark)] + mark if limit > 2 * len(mark) else text[:limit]


class Notices:
    """The newest notices within a count and a size budget; older ones are dropped and counted."""

    def __init__(self, max_count: int = 32, max_chars: int = 8 * 1024) -> None:
        self.max_count = max_count
        self.max_chars = max_chars
        self._kept: deque[str] = deque()
        self._chars = 0
        self.dropped = 0

    def add(self, message: str) -> str:
        """Keep ``message`` (cut to the budget if it alone exceeds it); returns what was kept."""
        message = excerpt(message, self.max_chars)
        self._kept.append(message)
        self._chars += len(message)
        while len(self._kept) > self.max_count or self._chars > self.max_chars:
            self._chars -= len(self._kept.popleft())
            self.dropped += 1
        return message

    def lines(self) -> list[str]:
        """The kept notices, oldest first, after a line that counts the dropped ones (if any)."""
        head = [f"({self.dropped} older notices dropped)"] if self.dropped else []
        return head + list(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


class LogBudget:
    """A token bucket for one connection's log lines: ``burst`` at once, then ``rate`` per second.
    Lines over budget are counted; the next line let through says how many were suppressed."""

    def __init__(
        self, burst: int = 20, rate: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self.suppressed = 0

    def allow(self) -> int | None:
        """None if this line must be dropped; else how many were suppressed before it (then reset)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            self.suppressed += 1
            return None
        self._tokens -= 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed
