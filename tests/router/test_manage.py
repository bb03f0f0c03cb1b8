"""The management API over a real socket: `python -m router.serve` in a child process,
real replicas, httpx for every route and every error status, and schemathesis against
the API's own OpenAPI document."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from router.config import ConfigError, validate_service_name, validate_version_name
from router.manage import NAME_PATTERN, VERSION_PATTERN
from tests.router.serve_process import ServeProcess, wait_for_state

SCRIPTS = Path(__file__).parent / "scripts"
API = "/api/v1/manage"
ONE = {"numReplicas": 1}


def inference(script: str = "behave_score.py", **env: str) -> dict[str, Any]:
    return {
        "entryScript": script,
        "sourceDirectory": str(SCRIPTS),
        "environment": {"environmentVariables": env},
    }


def service_body(name: str, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "inferenceConfig": settings.pop("inferenceConfig", inference()),
        "deploymentConfig": settings.pop("deploymentConfig", ONE),
        **settings,
    }


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mlfe"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(state_dir: Path) -> Iterator[ServeProcess]:
    with ServeProcess(state_dir) as started:
        yield started


@pytest.fixture
def client(server: ServeProcess) -> Iterator[httpx.Client]:
    with server.client() as connected:
        yield connected


def deploy(client: httpx.Client, name: str, **settings: Any) -> dict[str, Any]:
    response = client.post(f"{API}/services", json=service_body(name, **settings))
    assert response.status_code == 202, response.text
    return wait_for_state(client, name)


def assert_error(response: httpx.Response, status: int, contains: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["message"]
    assert isinstance(message, str) and contains in message
    assert "Traceback" not in response.text
    return message


def test_the_state_directory_and_admin_key_are_private(
    server: ServeProcess, state_dir: Path
) -> None:
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    key_file = state_dir / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 43
    assert key_file.read_text().strip() not in server.log()


def test_every_route_needs_the_admin_key(server: ServeProcess) -> None:
    document = httpx.get(f"{server.url}{API}/openapi.json").json()
    validate(document)
    with httpx.Client(base_url=server.url) as anonymous:
        for path, operations in document["paths"].items():
            for method in operations:
                url = path.replace("{name}", "nothing").replace("{version}", "nothing")
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic x"},
                ):
                    response = anonymous.request(method.upper(), url, headers=headers)
                    if path.endswith("/openapi.json"):
                        assert response.status_code == 200
                        continue
                    assert_error(response, 401, "admin key")
                    assert response.headers["www-authenticate"] == "Bearer"


def test_the_document_describes_exactly_the_routes_served(
    server: ServeProcess, client: httpx.Client
) -> None:
    document = client.get(f"{API}/openapi.json").json()
    served = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert {
        ("/api/v1/manage/services", "GET"),
        ("/api/v1/manage/services", "POST"),
        ("/api/v1/manage/services/{name}", "GET"),
        ("/api/v1/manage/services/{name}", "PATCH"),
        ("/api/v1/manage/services/{name}", "DELETE"),
        ("/api/v1/manage/services/{name}/keys", "GET"),
        ("/api/v1/manage/services/{name}/regenerate-key", "POST"),
        ("/api/v1/manage/services/{name}/token", "POST"),
        ("/api/v1/manage/services/{name}/versions", "POST"),
        ("/api/v1/manage/services/{name}/versions/{version}", "PATCH"),
        ("/api/v1/manage/services/{name}/versions/{version}", "DELETE"),
        ("/api/v1/manage/services/{name}/logs", "GET"),
        ("/api/v1/manage/openapi.json", "GET"),
    } == served
    for path in {p for p, _ in served}:
        url = path.replace("{name}", "nothing").replace("{version}", "nothing")
        allowed = sorted(m for p, m in served if p == path)
        for method in ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"):
            if method in allowed:
                continue
            response = client.request(method, url)
            assert response.status_code == 405, (method, path)
            assert sorted(response.headers["allow"].split(", ")) == allowed


def test_a_service_through_every_route(server: ServeProcess, client: httpx.Client) -> None:
    assert client.get(f"{API}/services").json() == []
    response = client.post(f"{API}/services", json=service_body("life"))
    assert response.status_code == 202
    assert response.json()["state"] == "Transitioning"
    view = wait_for_state(client, "life")
    assert view["state"] == "Healthy"
    assert view["scoringUri"] == f"{server.url}/api/v1/service/life/score"
    assert [s["name"] for s in client.get(f"{API}/services").json()] == ["life"]

    assert httpx.get(view["swaggerUri"]).status_code == 200  # no auth needed
    keys = client.get(f"{API}/services/life/keys").json()
    score = view["scoringUri"]
    assert httpx.post(score, json={}, headers=_bearer(keys["primaryKey"])).status_code == 200

    response = client.post(f"{API}/services/life/regenerate-key", json={"keyType": "Primary"})
    assert response.status_code == 200
    new_keys = response.json()
    assert new_keys["secondaryKey"] == keys["secondaryKey"]
    assert httpx.post(score, json={}, headers=_bearer(keys["primaryKey"])).status_code == 401
    assert httpx.post(score, json={}, headers=_bearer(new_keys["primaryKey"])).status_code == 200
    assert_error(client.post(f"{API}/services/life/token"), 400, "not token auth")

    body = {
        "version": "blue",
        "inferenceConfig": inference(),
        "deploymentConfig": ONE,
        "trafficPercentile": 20,
        "models": None,  # null is the same as not given
        "isControl": None,
    }
    response = client.post(f"{API}/services/life/versions", json=body)
    assert response.status_code == 202, response.text
    view = wait_for_state(client, "life")
    assert view["state"] == "Healthy"
    shares = {v["name"]: v["effectiveTrafficPercentile"] for v in view["versions"]}
    assert shares == {"life": 80, "blue": 20}

    response = client.patch(f"{API}/services/life/versions/blue", json={"trafficPercentile": 40})
    assert response.status_code == 200  # traffic only: no replica changes
    shares = {v["name"]: v["trafficPercentile"] for v in response.json()["versions"]}
    assert shares == {"life": 0, "blue": 40}
    response = client.patch(
        f"{API}/services/life/versions/blue",
        json={"deploymentConfig": {"environmentVariables": {"MLFE_TEST_VERSION": "blue2"}}},
    )
    assert response.status_code == 202
    assert wait_for_state(client, "life")["state"] == "Healthy"
    pinned = httpx.post(
        score,
        json={},
        headers={**_bearer(new_keys["primaryKey"]), "azureml-model-deployment": "blue"},
    )
    assert pinned.json()["version"] == "blue2"

    response = client.get(f"{API}/services/life/logs", params={"version": "blue", "tail": 5})
    assert response.status_code == 200
    logs = response.json()
    assert logs["version"] == "blue"
    assert any(r["state"] == "Ready" for r in logs["replicas"])
    assert all(len(r["log"].splitlines()) <= 5 for r in logs["replicas"])
    assert client.get(f"{API}/services/life/logs").json()["version"] == "life"

    response = client.patch(
        f"{API}/services/life", json={"deploymentConfig": {"scoringTimeoutMs": 30000}}
    )
    assert response.status_code == 202
    view = wait_for_state(client, "life")
    default = next(v for v in view["versions"] if v["isDefault"])
    assert default["deploymentConfig"]["scoringTimeoutMs"] == 30000
    model = f"model:1:{SCRIPTS / 'behave_score.py'}"
    response = client.patch(f"{API}/services/life", json={"models": [model]})
    assert response.status_code == 202
    view = wait_for_state(client, "life")
    assert view["state"] == "Healthy"
    default = next(v for v in view["versions"] if v["isDefault"])
    assert default["models"] == [model] and default["modelDir"] is None

    response = client.delete(f"{API}/services/life/versions/blue")
    assert response.status_code == 202
    assert [v["name"] for v in response.json()["versions"]] == ["life"]
    wait_for_state(client, "life")

    response = client.delete(f"{API}/services/life")
    assert response.status_code == 202
    assert "life" in response.json()["message"]
    assert_error(client.get(f"{API}/services/life"), 404, "life")


def test_a_token_from_the_api_scores(client: httpx.Client) -> None:
    config = {"numReplicas": 1, "authEnabled": False, "tokenAuthEnabled": True}
    view = deploy(client, "tokens", deploymentConfig=config)
    assert view["authMode"] == "token"
    response = client.post(f"{API}/services/tokens/token")
    assert response.status_code == 200
    token = response.json()
    assert token["tokenType"] == "Bearer"
    assert token["refreshAfter"] < token["expiryOn"]
    scored = httpx.post(view["scoringUri"], json={}, headers=_bearer(token["accessToken"]))
    assert scored.status_code == 200
    client.delete(f"{API}/services/tokens")


def test_invalid_requests_get_400_naming_the_key(client: httpx.Client) -> None:
    services = f"{API}/services"
    scaler = {"autoScaler": {"minReplicas": 3, "maxReplicas": 2}}
    message = assert_error(
        client.post(services, json=service_body("bad", deploymentConfig=scaler)), 400
    )
    assert (
        message == "deploymentConfig.autoScaler.maxReplicas (2) is below autoScaler.minReplicas (3)"
    )
    both = {"authEnabled": True, "tokenAuthEnabled": True}
    assert_error(
        client.post(services, json=service_body("bad", deploymentConfig=both)),
        400,
        "deploymentConfig.tokenAuthEnabled",
    )
    assert_error(
        client.post(services, json=service_body("bad", deploymentConfig={"numReplica": 1})),
        400,
        "numReplicas",  # the suggestion for the misspelt key
    )
    assert_error(client.post(services, json=service_body("Bad_Name")), 400, "service name")
    assert_error(client.post(services, json={**service_body("bad"), "extra": 1}), 400, "'extra'")
    assert_error(client.post(services, json=[1]), 400, "JSON object")
    assert_error(
        client.post(services, content=b"{nope", headers={"content-type": "application/json"}),
        400,
        "not valid JSON",
    )
    assert_error(client.post(services, json={"name": "bad"}), 400, "inferenceConfig is required")
    relative = {"entryScript": "score.py", "sourceDirectory": "src"}
    assert_error(
        client.post(services, json=service_body("bad", inferenceConfig=relative)),
        400,
        "inferenceConfig.sourceDirectory must be an absolute path",
    )
    missing = inference("no_such_script.py")
    assert_error(
        client.post(services, json=service_body("bad", inferenceConfig=missing)),
        400,
        "inferenceConfig.entryScript",
    )
    assert_error(
        client.post(services, json=service_body("bad", models=["just-a-name"])), 400, "models[0]"
    )
    assert_error(
        client.post(services, json=service_body("bad", models=["m:1:/no/such/model"])),
        400,
        "does not exist",
    )
    assert_error(
        client.post(services, json=service_body("bad", modelDir="/no/such/dir")), 400, "modelDir"
    )
    assert "bad" not in {s["name"] for s in client.get(services).json()}


def test_http_level_refusals(client: httpx.Client) -> None:
    services = f"{API}/services"
    assert_error(
        client.post(services, content=b"name=x", headers={"content-type": "text/plain"}),
        415,
        "application/json",
    )
    huge = b'{"name": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    assert_error(
        client.post(services, content=huge, headers={"content-type": "application/json"}),
        413,
    )
    assert_error(client.get(f"{API}/no/such/route"), 404)
    assert_error(client.put(services), 405)


def test_unknown_services_and_versions_get_404(client: httpx.Client) -> None:
    for method, path, body in (
        ("GET", "/services/ghost", None),
        ("PATCH", "/services/ghost", {}),
        ("DELETE", "/services/ghost", None),
        ("GET", "/services/ghost/keys", None),
        ("POST", "/services/ghost/regenerate-key", {"keyType": "Primary"}),
        ("POST", "/services/ghost/token", None),
        ("POST", "/services/ghost/versions", {"version": "abc", "inferenceConfig": inference()}),
        ("PATCH", "/services/ghost/versions/abc", {}),
        ("DELETE", "/services/ghost/versions/abc", None),
        ("GET", "/services/ghost/logs", None),
    ):
        assert_error(client.request(method, API + path, json=body), 404, "ghost")
    deploy(client, "known")
    assert_error(client.patch(f"{API}/services/known/versions/ghost", json={}), 404, "ghost")
    assert_error(client.delete(f"{API}/services/known/versions/ghost"), 404, "ghost")
    assert_error(client.get(f"{API}/services/known/logs?version=ghost"), 404, "ghost")
    assert_error(client.get(f"{API}/services/known/logs?tail=abc"), 400, "tail")
    assert_error(client.get(f"{API}/services/known/logs?tail=0"), 400, "tail")
    assert_error(client.delete(f"{API}/services/known/versions/known"), 400, "last version")
    assert_error(
        client.post(f"{API}/services/known/regenerate-key", json={"keyType": "primary"}),
        400,
        "keyType",
    )
    client.delete(f"{API}/services/known")


def test_conflicts_get_409(client: httpx.Client) -> None:
    slow = service_body("slow", inferenceConfig=inference("slow_init.py", SLOW_INIT_SECONDS="2"))
    assert client.post(f"{API}/services", json=slow).status_code == 202
    assert_error(client.post(f"{API}/services", json=slow), 409, "already exists")
    version = {"version": "blue", "inferenceConfig": inference()}
    assert_error(client.post(f"{API}/services/slow/versions", json=version), 409, "Transitioning")
    assert_error(
        client.patch(f"{API}/services/slow", json={"deploymentConfig": {"numReplicas": 2}}),
        409,
        "Transitioning",
    )
    assert wait_for_state(client, "slow")["state"] == "Healthy"
    assert client.post(f"{API}/services/slow/versions", json=version).status_code == 202
    wait_for_state(client, "slow")
    client.delete(f"{API}/services/slow")


def test_schemathesis_finds_no_server_error(server: ServeProcess, tmp_path: Path) -> None:
    deploy(server.client(), "fuzz")
    config = tmp_path / "schemathesis.toml"
    # Path parameters name a real service, so the fuzzer gets past 404 to the validation.
    config.write_text('[parameters]\n"path.name" = "fuzz"\n"path.version" = "fuzz"\n')
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{server.url}{API}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.admin_key}",
        "--checks",
        "all",
        # Valid-looking input is refused for reasons a schema cannot say (files that do
        # not exist, version rules): that is not a fault.
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "15",
        "--seed",
        "20240601",
        "--workers",
        "1",
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,  # hypothesis keeps its example database in the working directory
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "event=manage-error" not in server.log()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("pattern", "validate"),
    [(NAME_PATTERN, validate_service_name), (VERSION_PATTERN, validate_version_name)],
)
def test_the_documented_name_patterns_match_the_validation(
    pattern: str, validate: Callable[[str], str]
) -> None:
    chances = random.Random(7)
    for length in range(1, 36):
        for _ in range(100):
            name = "".join(chances.choice("abz09-A_.") for _ in range(length))
            try:
                validate(name)
                valid = True
            except ConfigError:
                valid = False
            assert bool(re.search(pattern, name)) == valid, name
