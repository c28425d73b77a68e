"""CPU spent by each side of a stack during one workload, read from ``/proc`` (Linux).

On a 2-core machine the load generator, the backend and the SSH client share the cores with the server,
so requests per second mix everyone's work. CPU seconds per request of the server side (the relay
process; sshd and the nginx front for the classic stack) is what a VPS owner pays, and the client side's
(the ssh client or relay-client) is what a Colab runtime pays; both are read here, as whole process
trees, before and after a workload."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .processes import descendants

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sides:
    """Root pids of the process trees on each side of a tunnel."""

    server: tuple[int, ...]
    client: tuple[int, ...]


def tree_cpu_seconds(roots: tuple[int, ...]) -> float:
    """User + system CPU of every live process in the trees under ``roots``, seconds."""
    total = 0
    for pid in {p for root in roots for p in descendants(root)}:
        with contextlib.suppress(OSError):
            # Fields after the command name's closing paren: utime and stime are the 12th and 13th.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuUse:
    server_s: float = 0.0
    client_s: float = 0.0
    busy_share: float = 0.0  # of the whole machine, 0..1


@dataclass
class CpuMeter:
    """``with CpuMeter(sides) as use: ...``: fills ``use`` when the block ends. ``None`` (the direct
    rows: no tunnel to weigh) measures nothing and leaves ``use`` at zero."""

    sides: Sides | None
    use: CpuUse = field(default_factory=CpuUse)

    def __post_init__(self) -> None:
        self.sides = self.sides or Sides((), ())

    def __enter__(self) -> CpuUse:
        assert self.sides is not None
        self._server = tree_cpu_seconds(self.sides.server)
        self._client = tree_cpu_seconds(self.sides.client)
        self._busy, self._total = machine_ticks()
        return self.use

    def __exit__(self, *exc: object) -> None:
        assert self.sides is not None
        self.use.server_s = tree_cpu_seconds(self.sides.server) - self._server
        self.use.client_s = tree_cpu_seconds(self.sides.client) - self._client
        busy, total = machine_ticks()
        self.use.busy_share = (busy - self._busy) / max(1, total - self._total)


def per_unit(use: CpuUse, units: float, prefix: str, scale: float = 1e6) -> dict[str, float]:
    """CPU per unit of work on each side (µs by default), and the machine's busy share in %."""
    if units <= 0:
        return {}
    return {
        f"{prefix}_cpu_us": use.server_s * scale / units,
        f"{prefix}_client_cpu_us": use.client_s * scale / units,
        f"{prefix}_busy_pct": use.busy_share * 100,
    }
