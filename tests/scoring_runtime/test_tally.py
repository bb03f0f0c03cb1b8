"""Tallies (scoring_runtime/tally.py): the series Prometheus reads, as its own metrics would."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from scoring_runtime.tally import CountsByCode, HistogramTally

BOUNDS = (0.001, 0.01, 0.1)
VALUES = (0.0, 0.001, 0.0011, 0.01, 0.5, 7.0)


class _Families(Collector):
    def __init__(self, histogram: HistogramTally, codes: CountsByCode) -> None:
        self.histogram = histogram
        self.codes = codes

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        latency = HistogramMetricFamily("latency_seconds", "Latency.", labels=["service"])
        self.histogram.add_to(latency, ["svc"])
        yield latency
        requests = CounterMetricFamily("requests", "Requests.", labels=["service", "code"])
        self.codes.add_to(requests, ["svc"])
        yield requests


def test_a_histogram_tally_exposes_what_a_prometheus_histogram_would() -> None:
    tally = HistogramTally(BOUNDS)
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "latency_seconds", "Latency.", ["service"], buckets=BOUNDS, registry=reference_registry
    ).labels("svc")
    for value in VALUES:
        tally.observe(value)
        reference.observe(value)
    registry = CollectorRegistry()
    registry.register(_Families(tally, CountsByCode()))

    def series(page: bytes) -> dict[str, float]:
        return {
            f"{sample.name}{sorted(sample.labels.items())}": sample.value
            for family in text_string_to_metric_families(page.decode())
            if family.name == "latency_seconds"
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    ours = series(generate_latest(registry))
    assert ours == series(generate_latest(reference_registry))
    # A value equal to a bound falls in that bound's bucket (le = less or equal).
    assert ours["latency_seconds_bucket[('le', '0.001'), ('service', 'svc')]"] == 2
    assert ours["latency_seconds_bucket[('le', '+Inf'), ('service', 'svc')]"] == len(VALUES)
    assert tally.count == len(VALUES)


def test_counts_by_code_are_one_series_per_code() -> None:
    codes = CountsByCode()
    for status in (200, 200, 503, 200):
        codes.count(status)
    registry = CollectorRegistry()
    registry.register(_Families(HistogramTally(BOUNDS), codes))
    text = generate_latest(registry).decode()
    assert 'requests_total{code="200",service="svc"} 3.0' in text
    assert 'requests_total{code="503",service="svc"} 1.0' in text
    assert codes.get(404) == 0
