"""Admission: caps on what may be open at once, in total and per client address.

OpenSSH's ``MaxStartups`` idea, applied to visitor connections and to SSH connections that have not
logged in yet: past a cap, a new connection is refused at once (cheaply, before any parsing or key
exchange) while those already admitted keep being served. No I/O here; the callers answer the refusal.
"""

from __future__ import annotations

import resource
from collections import Counter
from enum import Enum


class Refusal(Enum):
    TOTAL = "total"  # the relay as a whole is at its cap
    PER_ADDRESS = "per_address"  # this client address is at its cap


class Gate:
    """Counts admitted holders per address; ``enter`` refuses past either cap, ``leave`` releases."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._by_address: Counter[str] = Counter()
        self._count = 0

    def enter(self, address: str, *, exempt_per_address: bool = False) -> Refusal | None:
        """Admit one more from ``address``, or say why not. A trusted front proxy is exempt from
        the per-address cap (all visitors arrive from its address) but not from the total."""
        if self._count >= self.total:
            return Refusal.TOTAL
        if not exempt_per_address and self._by_address[address] >= self.per_address:
            return Refusal.PER_ADDRESS
        self._by_address[address] += 1
        self._count += 1
        return None

    def leave(self, address: str) -> None:
        """Release one admitted holder from ``address`` (exactly once per successful ``enter``)."""
        if self._by_address[address] <= 0:
            raise ValueError(f"leave() without enter() for {address!r}")
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]  # memory stays bounded by what is open now
        self._count -= 1

    def __len__(self) -> int:
        return self._count

    def count(self, address: str) -> int:
        return self._by_address.get(address, 0)


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise this process's soft open-file limit toward ``wanted`` (never above the hard limit).

    Every visitor and SSH connection is a file descriptor; a common default soft limit of 1024 would
    make accept() fail (EMFILE) long before ``http_max_connections`` refuses cleanly with a 503.
    Returns (soft limit now, wanted) so the caller can warn when the caps cannot all be reached.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, wanted
