"""Prometheus metrics of the router.

Per-request metrics are counters and histograms whose children are resolved once per
service/version (`VersionMetrics`), so the hot path does a dict lookup and an `inc`.
Gauges that describe state (in flight, waiting, replicas) are read from the pools at
scrape time by a collector, costing the hot path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# (service, version, in_flight, waiting, replicas by state)
PoolSample = tuple[str, str, int, int, dict[str, int]]


@dataclass(eq=False)
class VersionMetrics:
    """Metric children of one service version, resolved once."""

    _requests: Counter
    _labels: tuple[str, str]
    latency: Any  # Histogram child
    queue_wait: Any  # Histogram child
    _by_code: dict[int, Any] = field(default_factory=dict)

    def count(self, status: int) -> None:
        child = self._by_code.get(status)
        if child is None:
            child = self._by_code[status] = self._requests.labels(*self._labels, str(status))
        child.inc()


class _PoolCollector(Collector):
    def __init__(self, sample: Callable[[], Iterable[PoolSample]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "mlfe_in_flight_requests",
            "Requests being scored by replicas.",
            labels=["service", "version"],
        )
        waiting = GaugeMetricFamily(
            "mlfe_waiting_requests",
            "Requests waiting in the queue for a free replica slot.",
            labels=["service", "version"],
        )
        replicas = GaugeMetricFamily(
            "mlfe_replicas",
            "Replicas by state.",
            labels=["service", "version", "state"],
        )
        for service, version, flying, queued, states in self._sample():
            in_flight.add_metric([service, version], flying)
            waiting.add_metric([service, version], queued)
            for state, count in states.items():
                replicas.add_metric([service, version, state], count)
        yield in_flight
        yield waiting
        yield replicas


class RouterMetrics:
    """The router's metrics, in a registry of its own (one router per process in use,
    several in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "mlfe_requests",
            "Scoring requests answered, by service, version and status code.",
            ["service", "version", "code"],
            registry=self.registry,
        )
        self._unrouted = Counter(
            "mlfe_unrouted_requests",
            "Scoring requests answered before a version was chosen, by status code.",
            ["code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "mlfe_request_duration_seconds",
            "Time from receiving a scoring request to the end of its response.",
            ["service", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queue_wait = Histogram(
            "mlfe_queue_wait_seconds",
            "Time a scoring request waited for a free replica slot.",
            ["service", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._unrouted_by_code: dict[int, Any] = {}

    def version(self, service: str, version: str) -> VersionMetrics:
        return VersionMetrics(
            _requests=self._requests,
            _labels=(service, version),
            latency=self._latency.labels(service, version),
            queue_wait=self._queue_wait.labels(service, version),
        )

    def count_unrouted(self, status: int) -> None:
        child = self._unrouted_by_code.get(status)
        if child is None:
            child = self._unrouted_by_code[status] = self._unrouted.labels(str(status))
        child.inc()

    def watch_pools(self, sample: Callable[[], Iterable[PoolSample]]) -> None:
        """Export pool state gauges by calling `sample` at scrape time."""
        self.registry.register(_PoolCollector(sample))

    def render(self) -> bytes:
        return generate_latest(self.registry)
