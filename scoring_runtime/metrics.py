"""Prometheus metrics for GET /metrics, in a registry of this process's own.

Per-request work is two pre-resolved metric children; slot gauges are read from the
slots only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scoring_runtime.slots import ScoringSlots

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


# `_created` series double the page for nothing a scraper of replicas uses; this
# process is ours, so the process-wide switch is ours too.
disable_created_metrics()


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


class RuntimeMetrics:
    def __init__(self, slots: ScoringSlots) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "mlfe_runtime_score_requests",
            "/score requests answered, by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "mlfe_runtime_score_duration_seconds",
            "Time from a /score request's arrival to its response, waiting for a slot included.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._run_latency = Histogram(
            "mlfe_runtime_run_duration_seconds",
            "Time spent in run().",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_SlotCollector(slots))
        self._by_code: dict[int, Counter] = {}

    def observe(self, status: int, seconds: float, run_ms: float | None) -> None:
        child = self._by_code.get(status)
        if child is None:
            child = self._by_code[status] = self._requests.labels(code=str(status))
        child.inc()
        self._latency.observe(seconds)
        if run_ms is not None:
            self._run_latency.observe(run_ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
