"""Routes, status codes and the headers every response carries (scoring_runtime/server.py)."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.runtime_proc import RuntimeProcess


@pytest.fixture(scope="module")
def runtime(runtime_for) -> RuntimeProcess:
    return runtime_for("echo_text.py")


@pytest.fixture(scope="module")
def client(runtime):
    with runtime.client() as client:
        yield client


def test_health_probe_says_healthy(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.text == "Healthy"
    assert response.headers["content-type"].startswith("text/plain")


def test_head_on_health_probe_has_no_body(client) -> None:
    response = client.head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_unknown_path_is_a_json_404(client) -> None:
    response = client.get("/scores")
    assert response.status_code == 404
    assert "not found" in response.json()["message"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_on_score_are_405(client, method: str) -> None:
    response = client.request(method, "/score", content=b"x")
    assert response.status_code == 405
    assert response.json() == {"message": "Method not allowed"}
    assert "POST" in response.headers["allow"]


def test_post_on_health_probe_is_405(client) -> None:
    response = client.post("/", content=b"x")
    assert response.status_code == 405
    assert "message" in response.json()


def test_options_on_score_is_200_without_calling_run(client) -> None:
    response = client.options("/score")
    assert response.status_code == 200
    assert response.content == b""


def test_request_id_is_generated_when_absent(client) -> None:
    response = client.post("/score", content=b"hi")
    request_id = response.headers["x-request-id"]
    assert str(uuid.UUID(request_id)) == request_id
    # Azure copies the request id into the legacy header when no client id was sent.
    assert response.headers["x-ms-request-id"] == request_id
    assert "x-ms-client-request-id" not in response.headers


def test_request_ids_are_echoed(client) -> None:
    response = client.post(
        "/score",
        content=b"hi",
        headers={"x-request-id": "req-1", "x-ms-client-request-id": "client-1"},
    )
    assert response.headers["x-request-id"] == "req-1"
    assert response.headers["x-ms-client-request-id"] == "client-1"
    assert response.headers["x-ms-request-id"] == "client-1"


def test_legacy_request_id_stands_in_for_client_id(client) -> None:
    response = client.post("/score", content=b"hi", headers={"x-ms-request-id": "legacy-7"})
    assert response.headers["x-ms-client-request-id"] == "legacy-7"
    assert response.headers["x-ms-request-id"] == "legacy-7"


def test_trace_id_is_echoed(client) -> None:
    response = client.post("/score", content=b"hi", headers={"TraceId": "trace-9"})
    assert response.headers["traceid"] == "trace-9"


def test_request_id_over_100_characters_is_431(client) -> None:
    response = client.post("/score", content=b"hi", headers={"x-request-id": "r" * 101})
    assert response.status_code == 431
    assert "x-request-id" in response.json()["message"]
    assert "x-request-id" not in response.headers


def test_client_request_id_over_100_characters_is_431(client) -> None:
    response = client.post("/score", content=b"hi", headers={"x-ms-client-request-id": "c" * 101})
    assert response.status_code == 431
    assert "x-ms-client-request-id" in response.json()["message"]


def test_request_id_of_exactly_100_characters_is_accepted(client) -> None:
    response = client.post("/score", content=b"hi", headers={"x-request-id": "r" * 100})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "r" * 100


def test_score_response_reports_run_time(client) -> None:
    response = client.post("/score", content=b"hi")
    assert response.status_code == 200
    assert float(response.headers["x-ms-run-fn-exec-ms"]) >= 0.0
    assert response.headers["x-ms-run-function-failed"] == "False"


def test_keep_alive_connection_serves_many_requests(client) -> None:
    for index in range(20):
        assert client.post("/score", content=str(index).encode()).json() == {"raw": str(index)}
