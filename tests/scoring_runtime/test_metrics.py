"""GET /metrics (scoring_runtime/metrics.py): counters by code, latency, slots."""

from __future__ import annotations

import pytest

from tests.helpers.runtime_proc import RuntimeProcess


@pytest.fixture(scope="module")
def runtime(runtime_for) -> RuntimeProcess:
    return runtime_for("echo_text.py", args=["--max-concurrent", "4"])


def _value(page: str, series: str) -> float:
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the metrics page")


def test_metrics_count_score_requests_by_code(runtime) -> None:
    with runtime.client() as client:
        for _ in range(3):
            client.post("/score", content=b"ok")
        client.post("/score", content=b"raise")
        client.post("/score", content=b"\xff")
        page = client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    text = page.text
    assert _value(text, 'mlfe_runtime_score_requests_total{code="200"}') == 3
    assert _value(text, 'mlfe_runtime_score_requests_total{code="500"}') == 1
    assert _value(text, 'mlfe_runtime_score_requests_total{code="400"}') == 1
    assert _value(text, "mlfe_runtime_score_duration_seconds_count") == 5
    # Only the requests that reached run() have a run duration.
    assert _value(text, "mlfe_runtime_run_duration_seconds_count") == 4


def test_metrics_show_slots(runtime) -> None:
    with runtime.client() as client:
        text = client.get("/metrics").text
    assert _value(text, "mlfe_runtime_slots") == 4
    assert _value(text, "mlfe_runtime_busy_slots") == 0
    assert _value(text, "mlfe_runtime_waiting_requests") == 0


def test_health_and_metrics_requests_are_not_counted_as_scoring(runtime) -> None:
    with runtime.client() as client:
        before = client.get("/metrics").text
        client.get("/")
        after = client.get("/metrics").text
    series = "mlfe_runtime_score_duration_seconds_count"
    assert _value(before, series) == _value(after, series)
