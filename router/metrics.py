"""Prometheus metrics of the router.

Per-request metrics are tallies (scoring_runtime/tally.py) resolved once per
service/version (`VersionMetrics`), so the hot path does an index and an add, with no
lock. Gauges that describe state (in flight, waiting, replicas) are read from the pools
at scrape time by a collector, costing the hot path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from scoring_runtime.tally import LATENCY_BUCKETS, CountsByCode, HistogramTally

# (service, version, in_flight, waiting, replicas by state)
PoolSample = tuple[str, str, int, int, dict[str, int]]


class VersionMetrics:
    """The per-request tallies of one service version, resolved once."""

    def __init__(self) -> None:
        self.latency = HistogramTally(LATENCY_BUCKETS)
        self.queue_wait = HistogramTally(LATENCY_BUCKETS)
        self.requests = CountsByCode()


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


class _RequestCollector(Collector):
    def __init__(
        self, versions: dict[tuple[str, str], VersionMetrics], unrouted: CountsByCode
    ) -> None:
        self._versions = versions
        self._unrouted = unrouted

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "mlfe_requests",
            "Scoring requests answered, by service, version and status code.",
            labels=["service", "version", "code"],
        )
        latency = HistogramMetricFamily(
            "mlfe_request_duration_seconds",
            "Time from receiving a scoring request to the end of its response.",
            labels=["service", "version"],
        )
        queue_wait = HistogramMetricFamily(
            "mlfe_queue_wait_seconds",
            "Time a scoring request waited for a free replica slot.",
            labels=["service", "version"],
        )
        for labels, version in self._versions.items():
            version.requests.add_to(requests, labels)
            version.latency.add_to(latency, labels)
            version.queue_wait.add_to(queue_wait, labels)
        unrouted = CounterMetricFamily(
            "mlfe_unrouted_requests",
            "Scoring requests answered before a version was chosen, by status code.",
            labels=["code"],
        )
        self._unrouted.add_to(unrouted, [])
        yield requests
        yield unrouted
        yield latency
        yield queue_wait


class RouterMetrics:
    """The router's metrics, in a registry of its own (one router per process in use,
    several in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Kept for the router's life: a version deployed again counts on from where it was.
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        self._unrouted = CountsByCode()
        self.registry.register(_RequestCollector(self._versions, self._unrouted))

    def version(self, service: str, version: str) -> VersionMetrics:
        metrics = self._versions.get((service, version))
        if metrics is None:
            metrics = self._versions[(service, version)] = VersionMetrics()
        return metrics

    def count_unrouted(self, status: int) -> None:
        self._unrouted.count(status)

    def watch_pools(self, sample: Callable[[], Iterable[PoolSample]]) -> None:
        """Export pool state gauges by calling `sample` at scrape time."""
        self.registry.register(_PoolCollector(sample))

    def render(self) -> bytes:
        return generate_latest(self.registry)
