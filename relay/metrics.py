"""Prometheus metrics (DESIGN §3.6) on a listener of their own (``--metrics-bind``), never on the public
ports; off by default.

The hot path only adds to plain integers (a status code's count, a duration's bucket); tunnels count
their own bytes and requests as they flow. Everything is turned into metric families when Prometheus
scrapes, by one collector, with prometheus-client's exposition format. Per-tunnel series are capped
(``metrics_max_tunnels``) and go away when their name or domain is no longer served.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .storereads import RunReads, inline
from .tunnels import Registry, Tunnel

log = logging.getLogger(__name__)

#: Upper bounds of the request duration histogram, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Meter:
    """What the hot path counts: requests by status, their durations, refusals by reason."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.refusals: Counter[str] = Counter()

    def request(self, status: int, seconds: float) -> None:
        self.codes[status] += 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds

    def refused(self, reason: str) -> None:
        self.refusals[reason] += 1


class HostTotals:
    """Per-host request and byte totals across reconnects: a closed tunnel's counts are kept here,
    a live one's are read from it at scrape time (so counters never go back)."""

    def __init__(self, registry: Registry, *, max_hosts: int) -> None:
        self.registry = registry
        self.max_hosts = max_hosts
        self.closed: dict[str, tuple[int, int, int]] = {}  # host -> requests, bytes in, bytes out
        self._live: dict[str, Tunnel] = {}
        #: Bytes of hosts whose series were dropped: relay_bytes_total never goes back.
        self.dropped_in = self.dropped_out = 0
        registry.subscribe(self.on_registry_change)

    def on_registry_change(self, host: str, tunnel: Tunnel | None) -> None:
        old = self._live.pop(host, None)
        if old is not None:
            requests, b_in, b_out = self.closed.get(host, (0, 0, 0))
            self.closed[host] = (requests + old.requests, b_in + old.bytes_in, b_out + old.bytes_out)
        if tunnel is not None:
            self._live[host] = tunnel
        while len(self.closed) > self.max_hosts:  # the oldest offline hosts' series go first
            gone = next((h for h in self.closed if h not in self._live), None)
            if gone is None:
                break
            self._drop(gone)

    def _drop(self, host: str) -> None:
        _, b_in, b_out = self.closed.pop(host)
        self.dropped_in += b_in
        self.dropped_out += b_out

    def totals(self) -> Iterator[tuple[str, bool, int, int, int]]:
        """(host, up, requests, bytes in, bytes out), at most ``max_hosts`` of them."""
        hosts = list(dict.fromkeys([*self._live, *self.closed]))[: self.max_hosts]
        for host in hosts:
            requests, b_in, b_out = self.closed.get(host, (0, 0, 0))
            live = self._live.get(host)
            if live is not None:
                requests, b_in, b_out = requests + live.requests, b_in + live.bytes_in, b_out + live.bytes_out
            yield host, live is not None, requests, b_in, b_out

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the series of offline hosts that are no longer served (a released name)."""
        for host in [h for h in self.closed if h not in self._live and not keep(h)]:
            self._drop(host)


class RelayCollector(Collector):
    def __init__(
        self,
        meter: Meter,
        hosts: HostTotals,
        *,
        ssh_connections: Callable[[], int],
        websockets: Callable[[], int],
        served: Callable[[str], bool],
    ) -> None:
        self.meter = meter
        self.hosts = hosts
        self.ssh_connections = ssh_connections
        self.websockets = websockets
        self.served = served

    def collect(self) -> Iterator[Metric]:
        meter = self.meter
        info = GaugeMetricFamily("relay_build_info", "The relay's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("relay_tunnels", "Live tunnels", value=len(self.hosts.registry))
        yield GaugeMetricFamily(
            "relay_ssh_connections", "Logged-in SSH connections", value=self.ssh_connections()
        )
        yield GaugeMetricFamily(
            "relay_websockets_open", "Upgraded connections open now", value=self.websockets()
        )
        codes = CounterMetricFamily("relay_http_requests", "Visitor requests answered", labels=["code"])
        for code, count in sorted(meter.codes.items()):
            codes.add_metric([str(code)], count)
        yield codes
        cumulative, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), meter.buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(
            "relay_http_request_duration_seconds", "Visitor request durations", buckets=cumulative,
            sum_value=meter.seconds,
        )  # fmt: skip
        refusals = CounterMetricFamily(
            "relay_refusals", "Requests and connections refused", labels=["reason"]
        )
        for reason, count in sorted(meter.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        yield from self._per_tunnel()

    def _per_tunnel(self) -> Iterator[Metric]:
        self.hosts.forget(self.served)
        up = GaugeMetricFamily("relay_tunnel_up", "1 while the tunnel is live", labels=["host"])
        requests = CounterMetricFamily("relay_tunnel_requests", "Requests forwarded", labels=["host"])
        tunnel_bytes = CounterMetricFamily(
            "relay_tunnel_bytes", "Bytes through the tunnel", labels=["host", "direction"]
        )
        total_in, total_out = self.hosts.dropped_in, self.hosts.dropped_out
        for host, live, count, b_in, b_out in self.hosts.totals():
            up.add_metric([host], 1 if live else 0)
            requests.add_metric([host], count)
            tunnel_bytes.add_metric([host, "in"], b_in)
            tunnel_bytes.add_metric([host, "out"], b_out)
            total_in, total_out = total_in + b_in, total_out + b_out
        all_bytes = CounterMetricFamily("relay_bytes", "Bytes through all tunnels", labels=["direction"])
        all_bytes.add_metric(["in"], total_in)
        all_bytes.add_metric(["out"], total_out)
        yield from (all_bytes, up, requests, tunnel_bytes)


def metrics_app(registry: CollectorRegistry, reads: RunReads = inline) -> web.Application:
    """``reads``: where a scrape runs (its collectors read the store: off the loop on PostgreSQL)."""

    async def metrics(request: web.Request) -> web.Response:
        body = await reads(lambda: generate_latest(registry))
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
