"""Per-request counts kept as plain numbers, turned into Prometheus families when scraped.

prometheus-client's metrics take a lock on every `inc` and `observe` so that any thread
may update them: about 0.3 and 0.55 µs each, three to five times per request. The router
and the runtime update their per-request metrics only on the event loop's thread, and
serve /metrics on that thread too, so here an update is an index and an add; the
collector builds the families, with the same names and series, when /metrics is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Seconds: the router's and the runtime's latency histograms, from 1 ms to a minute.
# Typed as a tuple of any length: compiled, a fixed-length tuple of floats is unboxed, and
# mypyc (2.4) then reads it from another compiled module as never set.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class HistogramTally:
    """Bucket counts and a sum; `le` buckets as Prometheus defines them (value ≤ bound)."""

    __slots__ = ("_bounds", "_counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # A scan from the smallest bound: requests mostly land in the first few buckets,
        # where this (compiled) beats a call into bisect.
        index = 0
        for bound in self._bounds:
            if value <= bound:
                break
            index += 1
        self._counts[index] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str]) -> None:
        buckets = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), float(total)))
        family.add_metric(list(labels), buckets, self.sum)


class CountsByCode:
    """Responses counted by HTTP status code."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def count(self, status: int) -> None:
        counts = self._counts
        counts[status] = counts.get(status, 0) + 1

    def get(self, status: int) -> int:
        return self._counts.get(status, 0)

    def add_to(self, family: CounterMetricFamily, labels: Sequence[str]) -> None:
        for status, count in sorted(self._counts.items()):
            family.add_metric([*labels, str(status)], float(count))
