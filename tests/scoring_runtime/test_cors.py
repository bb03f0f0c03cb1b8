"""CORS for AML_CORS_ORIGINS / --cors-origins (scoring_runtime/cors.py), end to end."""

from __future__ import annotations

import pytest

from scoring_runtime.cors import CorsPolicy
from tests.helpers.runtime_proc import RuntimeProcess

ALLOWED = "https://app.example"


@pytest.fixture(scope="module")
def listed(runtime_for) -> RuntimeProcess:
    return runtime_for(
        "echo_text.py", env={"AML_CORS_ORIGINS": f"{ALLOWED}, https://other.example"}
    )


@pytest.fixture(scope="module")
def wildcard(runtime_for) -> RuntimeProcess:
    return runtime_for("echo_text.py", args=["--cors-origins", "*"])


def test_allowed_origin_is_echoed(listed) -> None:
    with listed.client() as client:
        response = client.post("/score", content=b"x", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["vary"] == "Origin"


def test_other_origins_get_no_cors_headers(listed) -> None:
    with listed.client() as client:
        response = client.post("/score", content=b"x", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_preflight_is_answered_without_calling_run(listed) -> None:
    with listed.client() as client:
        response = client.options(
            "/score",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert response.headers["access-control-allow-headers"] == "content-type, authorization"


def test_wildcard_allows_any_origin(wildcard) -> None:
    with wildcard.client() as client:
        response = client.get("/", headers={"Origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "https://anyone.example"


def test_no_origins_means_no_policy() -> None:
    assert CorsPolicy.from_origins(["", " "]) is None


def test_preflight_for_a_method_not_allowed_gets_only_the_origin() -> None:
    policy = CorsPolicy.from_origins([ALLOWED])
    assert policy is not None
    headers = dict(policy.headers(ALLOWED.encode(), "OPTIONS", b"DELETE", None))
    assert headers[b"access-control-allow-origin"] == ALLOWED.encode()
    assert b"access-control-allow-methods" not in headers
