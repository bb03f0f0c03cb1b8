"""The router's metrics (router/metrics.py): per-version series and pool gauges."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from router.metrics import RouterMetrics


def _samples(metrics: RouterMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_each_version_has_its_own_series() -> None:
    metrics = RouterMetrics()
    blue, green = metrics.version("svc", "blue"), metrics.version("svc", "green")
    for status in (200, 200, 503):
        blue.requests.count(status)
        blue.latency.observe(0.004)
    blue.queue_wait.observe(0.0)
    green.requests.count(200)
    green.latency.observe(2.0)
    metrics.count_unrouted(401)
    samples = _samples(metrics)
    blue_labels = (("service", "svc"), ("version", "blue"))
    assert samples[("mlfe_requests_total", (("code", "200"), *blue_labels))] == 2
    assert samples[("mlfe_requests_total", (("code", "503"), *blue_labels))] == 1
    assert (
        samples[
            ("mlfe_requests_total", (("code", "200"), ("service", "svc"), ("version", "green")))
        ]
        == 1
    )
    assert samples[("mlfe_unrouted_requests_total", (("code", "401"),))] == 1
    assert samples[("mlfe_request_duration_seconds_count", blue_labels)] == 3
    assert samples[("mlfe_request_duration_seconds_bucket", (("le", "0.0025"), *blue_labels))] == 0
    assert samples[("mlfe_request_duration_seconds_bucket", (("le", "0.005"), *blue_labels))] == 3
    assert samples[("mlfe_queue_wait_seconds_count", blue_labels)] == 1


def test_a_version_deployed_again_counts_on() -> None:
    metrics = RouterMetrics()
    metrics.version("svc", "blue").requests.count(200)
    again = metrics.version("svc", "blue")
    again.requests.count(200)
    assert again.requests.get(200) == 2


def test_pool_gauges_are_read_at_scrape_time() -> None:
    metrics = RouterMetrics()
    state = {"in_flight": 0}
    metrics.watch_pools(lambda: [("svc", "blue", state["in_flight"], 3, {"ready": 2})])
    state["in_flight"] = 5
    samples = _samples(metrics)
    labels = (("service", "svc"), ("version", "blue"))
    assert samples[("mlfe_in_flight_requests", labels)] == 5
    assert samples[("mlfe_waiting_requests", labels)] == 3
    assert samples[("mlfe_replicas", (*labels[:1], ("state", "ready"), *labels[1:]))] == 2
