"""Prometheus metrics for GET /metrics, in a registry of this process's own.

Per-request work is a count and two histogram tallies, updated on the event loop's
thread (scoring_runtime/tally.py); slot gauges are read from the slots only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from scoring_runtime.slots import ScoringSlots
from scoring_runtime.tally import LATENCY_BUCKETS, CountsByCode, HistogramTally

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _SlotCollector(Collector):
    def __init__(self, slots: ScoringSlots) -> None:
        self._slots = slots

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "mlfe_runtime_slots", "run() calls this replica runs at once.", value=self._slots.size
        )
        yield GaugeMetricFamily(
            "mlfe_runtime_busy_slots",
            "Slots running a run() call, including calls past their timeout.",
            value=self._slots.busy,
        )
        yield GaugeMetricFamily(
            "mlfe_runtime_waiting_requests",
            "/score requests waiting for a free slot.",
            value=self._slots.waiting,
        )


class RuntimeMetrics(Collector):
    """/score requests by status code, their latency and the time spent in run()."""

    def __init__(self, slots: ScoringSlots) -> None:
        self._requests = CountsByCode()
        self._latency = HistogramTally(LATENCY_BUCKETS)
        self._run_latency = HistogramTally(LATENCY_BUCKETS)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.registry.register(_SlotCollector(slots))

    def observe(self, status: int, seconds: float, run_ms: float | None) -> None:
        self._requests.count(status)
        self._latency.observe(seconds)
        if run_ms is not None:
            self._run_latency.observe(run_ms / 1000.0)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "mlfe_runtime_score_requests",
            "/score requests answered, by HTTP status code.",
            labels=["code"],
        )
        self._requests.add_to(requests, [])
        yield requests
        latency = HistogramMetricFamily(
            "mlfe_runtime_score_duration_seconds",
            "Time from a /score request's arrival to its response, waiting for a slot included.",
        )
        self._latency.add_to(latency, [])
        yield latency
        run_latency = HistogramMetricFamily(
            "mlfe_runtime_run_duration_seconds", "Time spent in run()."
        )
        self._run_latency.add_to(run_latency, [])
        yield run_latency

    def render(self) -> bytes:
        return generate_latest(self.registry)
