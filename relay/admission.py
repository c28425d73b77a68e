"""Admission: caps on what may be open at once, in total, per client address and per network.

OpenSSH's ``MaxStartups`` idea (random early drop as the total nears its cap, then refusal), applied
to visitor connections and to SSH connections that have not logged in yet: a refused connection is
closed at once (cheaply, before any parsing or key exchange) while those already admitted keep being
served. No I/O here; the callers answer the refusal.
"""

from __future__ import annotations

import ipaddress
import random
import resource
from collections import Counter
from collections.abc import Callable
from enum import Enum

#: OpenSSH's MaxStartups ``rate``: the refusal probability where early drop begins.
EARLY_DROP_RATE = 0.3


class Refusal(Enum):
    TOTAL = "total"  # the relay as a whole is at its cap
    PER_ADDRESS = "per_address"  # this client address is at its cap
    PER_NETWORK = "per_network"  # this client's /24 (IPv4) or /64 (IPv6) is at its cap
    EARLY_DROP = "early_drop"  # near the total cap, this one lost the draw


def network_of(address: str) -> str:
    """The network an address is accounted to: its /24 for IPv4 (and IPv4-mapped IPv6), its /64 for
    IPv6. A few addresses are cheap for anyone who rents servers; whole networks are not."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP (a Unix socket, "unknown"): its own network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def early_drop_chance(count: int, start: int, full: int) -> float:
    """OpenSSH ``MaxStartups start:rate:full``: no refusal below ``start``, then a probability rising
    linearly from EARLY_DROP_RATE at ``start`` to 1 at ``full``. Attackers who push the count up meet
    refusals before the cap, and a legitimate newcomer still has a chance until it is reached."""
    if count < start:
        return 0.0
    if count >= full:
        return 1.0
    return EARLY_DROP_RATE + (1 - EARLY_DROP_RATE) * (count - start) / (full - start)


class Gate:
    """Counts admitted holders per address and per network; ``enter`` refuses past any cap (or by
    early drop as the total nears its cap), ``leave`` releases."""

    def __init__(
        self,
        total: int,
        per_address: int,
        per_network: int | None = None,
        early_drop: int | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.total = total
        self.per_address = per_address
        self.per_network = per_network if per_network is not None else total
        self.early_drop = early_drop if early_drop is not None else total
        self._draw = draw
        self._by_address: Counter[str] = Counter()
        self._by_network: Counter[str] = Counter()
        self._count = 0

    def enter(self, address: str, *, exempt_per_address: bool = False) -> Refusal | None:
        """Admit one more from ``address``, or say why not. A trusted front proxy is exempt from
        the per-address and per-network caps (all visitors arrive from its address) but not from
        the total or early drop."""
        refusal = self._refusal(address, exempt_per_address)
        if refusal is None:
            self._by_address[address] += 1
            self._by_network[network_of(address)] += 1
            self._count += 1
        return refusal

    def _refusal(self, address: str, exempt: bool) -> Refusal | None:
        if self._count >= self.total:
            return Refusal.TOTAL
        if not exempt:
            if self._by_address[address] >= self.per_address:
                return Refusal.PER_ADDRESS
            if self._by_network[network_of(address)] >= self.per_network:
                return Refusal.PER_NETWORK
        chance = early_drop_chance(self._count, self.early_drop, self.total)
        if chance and self._draw() < chance:
            return Refusal.EARLY_DROP
        return None

    def leave(self, address: str) -> None:
        """Release one admitted holder from ``address`` (exactly once per successful ``enter``)."""
        if self._by_address[address] <= 0:
            raise ValueError(f"leave() without enter() for {address!r}")
        network = network_of(address)
        for counter, key in ((self._by_address, address), (self._by_network, network)):
            counter[key] -= 1
            if not counter[key]:
                del counter[key]  # memory stays bounded by what is open now
        self._count -= 1

    def __len__(self) -> int:
        return self._count

    def count(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def network_count(self, address: str) -> int:
        return self._by_network.get(network_of(address), 0)


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
