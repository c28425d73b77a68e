"""The results of a run and their Markdown report: one table with every figure (median and min–max
over the rounds) and its ratio to the classic stack, then the issue's goals, each met or not.

Ratios are taken within each round (a stack against the classic stack measured minutes apart on the
same machine, in the same conditions) and then summarised; absolute figures drift far more between
runs than those ratios do."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from .stacks import LABELS, ORDER, REFERENCE, REFERENCE_PTY


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    unit: str
    digits: int
    reference: str = REFERENCE  # the row every ratio of this metric is taken against
    pty_reference: str | None = REFERENCE_PTY
    labels: tuple[tuple[str, str], ...] = ()  # rows whose label differs for this metric


#: Rows that are not visitor stacks: the two SSH servers' memory per idle tunnel.
SERVER_LABELS = {
    "sshd": "sshd (classic), per connection: summed PSS",
    "relay": "relay, per tunnel: RSS",
}
ROW_ORDER = ("direct-local", *ORDER, "sshd", "relay")
#: What "server side" means in the CPU rows (the client side is the ssh client or relay-client).
_SERVER_SIDE = "the relay process; sshd + the nginx front for classic"


def metrics(big_mib: int, connections: int, idle: tuple[int, int], delay_ms: int) -> list[Metric]:
    relay_idle, sshd_idle = idle
    return [
        Metric("bulk_mb_s", f"one {big_mib} MiB download, SHA-256 checked", "MB/s", 0),
        Metric("bulk_mb_per_cpu_s", "… MB moved per CPU-second of the server side", "MB/CPU-s", 0),
        Metric("bulk_mb_per_client_cpu_s", "… MB per CPU-second of the SSH client", "MB/CPU-s", 0),
        Metric("small_req_s", f"small requests (137 B), {connections} keep-alive connections", "req/s", 0),
        Metric("small_p50_ms", "… their latency, p50", "ms", 2),
        Metric("small_p99_ms", "… their latency, p99", "ms", 2),
        Metric("small_cpu_us", f"… server-side CPU per request ({_SERVER_SIDE})", "µs", 1),
        Metric("small_per_core", "… requests per second of one server core", "req/s", 0),
        Metric("small_client_cpu_us", "… SSH client's CPU per request", "µs", 1),
        Metric("small_busy_pct", "… the machine's busy share during the run", "%", 0),
        Metric("one_p50_ms", "one visitor, one request at a time (`wrk -c1`), p50", "ms", 3),
        Metric("one_p99_ms", "… p99", "ms", 3),
        Metric("new_conn_s", f"new connections, one request each ({connections} at a time)", "conn/s", 0),
        Metric("new_conn_cpu_us", "… server-side CPU per connection", "µs", 1),
        Metric("new_conn_client_cpu_us", "… SSH client's CPU per connection", "µs", 1),
        Metric("ws_rtt_p50_ms", "WebSocket round trip, one at a time, p50", "ms", 3),
        Metric("ws_rtt_p99_ms", "… p99", "ms", 2),
        Metric("ws_msg_s", "WebSocket echo, 64 messages in flight", "msg/s", 0),
        Metric("ws_cpu_us", "… server-side CPU per message (each echo is two)", "µs", 1),
        Metric("ws_client_cpu_us", "… SSH client's CPU per message", "µs", 1),
        Metric("ttu_ms", "start `ssh -R` / `relay-client connect` → URL serves the backend", "ms", 0),
        Metric(
            "idle_kib",
            f"memory of idle tunnels ({relay_idle:,} on the relay, {sshd_idle:,} on sshd)",
            "KiB",
            1,
            reference="sshd",
            pty_reference=None,
        ),
        Metric(
            "lab_s",
            f"JupyterLab cold page load, the SSH client {delay_ms} ms away each way",
            "s",
            2,
            labels=(("direct", "direct, the browser through the same delayed link"),),
        ),
        Metric("lab_cpu_ms", "… server-side CPU per cold Lab load", "ms", 0),
    ]


class Results:
    """Samples per (metric, row), grouped by round."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, round_no: int, row: str, figures: dict[str, float]) -> None:
        for metric, value in figures.items():
            self.samples[metric, row][round_no].append(value)

    def values(self, metric: str, row: str) -> list[float]:
        return [v for vs in self.samples.get((metric, row), {}).values() for v in vs]

    def rows(self, metric: str) -> list[str]:
        return [row for row in ROW_ORDER if self.values(metric, row)]

    def ratios(self, metric: str, row: str, reference: str) -> list[float]:
        """``row`` / ``reference``, one per round in which both were measured (medians within it)."""
        mine = self.samples.get((metric, row), {})
        theirs = self.samples.get((metric, reference), {})
        return [
            statistics.median(mine[r]) / statistics.median(theirs[r])
            for r in sorted(mine)
            if mine[r] and theirs.get(r) and statistics.median(theirs[r]) > 0
        ]


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _ratio(values: list[float]) -> str:
    if not values:
        return ""
    text = f"{statistics.median(values):.2f}×"
    if len(values) > 1:
        text += f" ({min(values):.2f}–{max(values):.2f})"
    return text


def table(results: Results, metric_list: list[Metric]) -> str:
    lines = [
        "| workload | stack | median | min–max | vs classic | vs classic with pty |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for metric in metric_list:
        for i, row in enumerate(results.rows(metric.key)):
            values = results.values(metric.key, row)
            spread = f"{_number(min(values), metric.digits)}–{_number(max(values), metric.digits)}"
            vs = _ratio(results.ratios(metric.key, row, metric.reference)) if row != metric.reference else ""
            vs_pty = ""
            if metric.pty_reference and row not in (metric.reference, metric.pty_reference):
                vs_pty = _ratio(results.ratios(metric.key, row, metric.pty_reference))
            label = f"{metric.workload}, {metric.unit}" if i == 0 else ""
            row_label = dict(metric.labels).get(row) or LABELS.get(row) or SERVER_LABELS[row]
            lines.append(
                f"| {label} | {row_label} | {_number(statistics.median(values), metric.digits)} "
                f"| {spread} | {vs} | {vs_pty} |"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class Goal:
    text: str
    metric: str
    row: str
    limit: float
    at_least: bool  # True: the figure must be >= limit; False: <= limit
    references: tuple[str, ...] = ()  # empty: an absolute figure; else ratios to each of these


_BOTH = (REFERENCE, REFERENCE_PTY)
GOALS = (
    # Issue 10's targets; ratios to classic `-N` (and to classic with a pty, for the record).
    Goal(
        "relay: server CPU per small request ≤ 3.0× classic", "small_cpu_us", "relay-ssh", 3.0, False, _BOTH
    ),
    Goal(
        "OpenSSH client: CPU per request ≤ 1.5× with sshd",
        "small_client_cpu_us",
        "relay-ssh",
        1.5,
        False,
        _BOTH,
    ),
    Goal("relay + OpenSSH client: small req/s ≥ 0.5× classic", "small_req_s", "relay-ssh", 0.5, True, _BOTH),
    Goal("relay + OpenSSH client: small p99 ≤ 0.5× classic", "small_p99_ms", "relay-ssh", 0.5, False, _BOTH),
    Goal("relay + OpenSSH client: bulk ≥ 1.0× classic", "bulk_mb_s", "relay-ssh", 1.0, True, _BOTH),
    Goal("relay-client: bulk ≥ 0.9× classic", "bulk_mb_s", "relay-client", 0.9, True, _BOTH),
    # Issue 14: SSH over WebSocket against the SSH port, both with relay-client.
    Goal(
        "relay-client over wss: bulk ≥ 0.8× over SSH",
        "bulk_mb_s",
        "relay-client-wss",
        0.8,
        True,
        ("relay-client",),
    ),
    Goal(
        "relay-client over wss: small req/s ≥ 0.8× over SSH",
        "small_req_s",
        "relay-client-wss",
        0.8,
        True,
        ("relay-client",),
    ),
    Goal("relay: ≤ 25 KiB per idle tunnel", "idle_kib", "relay", 25, False),
    Goal("`ssh -R` to a working URL ≤ 150 ms", "ttu_ms", "relay-ssh", 150, False),
    Goal("Lab load, relay + OpenSSH client ≤ 1.1× direct", "lab_s", "relay-ssh", 1.1, False, ("direct",)),
    Goal("Lab load, relay + `relay-client` ≤ 1.1× direct", "lab_s", "relay-client", 1.1, False, ("direct",)),
)

_REFERENCE_NAMES = {
    REFERENCE: "classic",
    REFERENCE_PTY: "classic with pty",
    "direct": "direct",
    "relay-client": "relay-client over SSH",
}


def goals(results: Results) -> str:
    lines = ["| goal | measured (median) | met |", "|---|---|---|"]
    for goal in GOALS:
        checks: list[tuple[str, float]] = []
        if goal.references:
            for ref in goal.references:
                if ratios := results.ratios(goal.metric, goal.row, ref):
                    ratio = statistics.median(ratios)
                    checks.append((f"{ratio:.2f}× {_REFERENCE_NAMES[ref]}", ratio))
        elif values := results.values(goal.metric, goal.row):
            checks.append((f"{statistics.median(values):,.1f}", statistics.median(values)))
        if not checks:
            lines.append(f"| {goal.text} | not measured | |")
            continue
        met = ["yes" if (v >= goal.limit if goal.at_least else v <= goal.limit) else "no" for _, v in checks]
        lines.append(f"| {goal.text} | {'; '.join(t for t, _ in checks)} | {' / '.join(met)} |")
    return "\n".join(lines)


def markdown(
    results: Results, metric_list: list[Metric], machine: list[tuple[str, str]], command: str, rounds: int
) -> str:
    head = [
        f"Command: `{command}`; {rounds} interleaved round(s); medians and min–max over the rounds "
        "(time to URL and Lab load: over every attempt); ratios taken within each round, then their median "
        "(min–max).",
        "",
        *(f"- {name}: {value}" for name, value in machine),
        "",
    ]
    return "\n".join([*head, table(results, metric_list), "", "Goals:", "", goals(results), ""])
