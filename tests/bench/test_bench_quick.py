"""The benchmark keeps working: ``python -m tests.bench.run --quick`` runs every stack and workload,
checks the bytes each stack served (it exits non-zero otherwise), and reports a figure for each. No
speed is asserted: CI machines vary, and the ratios belong to docs/performance.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.report import SERVER_LABELS
from tests.bench.stacks import LABELS, ORDER, TUNNELS

ROOT = Path(__file__).resolve().parents[2]
#: Figures every stack reports in the quick run: bulk, small req/s, p50, p99, one visitor p50 and p99,
#: new connections/s, WebSocket p50, p99 and messages/s.
VISITOR_FIGURES = 10
#: And every tunnel besides: CPU figures (bulk MB per CPU-second of server and client; per small
#: request server µs, per core, client µs and the machine's busy share; per new connection server
#: and client µs; per WebSocket message server and client µs) and time to URL.
TUNNEL_FIGURES = 10 + 1
#: CPU is read from /proc in clock ticks (10 ms). In the quick run the C stack echoes its few hundred
#: WebSocket messages, and moves its 8 MiB download, in less than one tick now and then, so its CPU
#: per message and MB per CPU-second may read as zero: those figures are present (the count above
#: checks it) but may be 0.
MAY_READ_ZERO = ("CPU per message", "per CPU-second")
#: Rows of each tunnel's figures that match MAY_READ_ZERO (server and client of each).
ZERO_ROWS = 4


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_quick_benchmark_reports_every_stack(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    assert text.strip() in proc.stdout
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    workloads, workload = [], ""
    for row in rows:  # a table row names its workload only on the first of its stacks
        workload = row.split("|")[1].strip() or workload
        workloads.append(workload)
    for key in ORDER:
        figures = [(w, row) for w, row in zip(workloads, rows, strict=True) if f"| {LABELS[key]} |" in row]
        expected = VISITOR_FIGURES + (TUNNEL_FIGURES if key in TUNNELS else 0)
        assert len(figures) == expected, (key, figures)
        measured = [row for w, row in figures if not any(label in w for label in MAY_READ_ZERO)]
        assert len(measured) == expected - (ZERO_ROWS if key in TUNNELS else 0), (key, figures)
        assert all("| 0 |" not in row and "| 0.00 |" not in row for row in measured), figures
    for label in SERVER_LABELS.values():
        assert any(f"| {label} |" in row for row in rows), label
    assert "cores:" in text and "OpenSSH" in text


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_hop_benchmark_measures_both_ways_in() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.hop", "--rounds", "2", "--seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("round ") for line in lines) == 6  # three stacks, two rounds
    assert any(line.startswith("hop/owning: req/s ") for line in lines), proc.stdout
    assert any(line.startswith("owning/single: req/s ") for line in lines), proc.stdout
