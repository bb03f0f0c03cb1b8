"""`python -m router.serve` as a user runs it: killed with SIGKILL and restarted it loses
nothing; stopped with SIGTERM it leaves no replica behind."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import soft_open_files_limit, with_soft_open_files_limit
from tests.router.serve_process import ServeProcess, pid_alive, wait_for_state, wait_gone

SCRIPTS = Path(__file__).parent / "scripts"
API = "/api/v1/manage"


def body(**settings: Any) -> dict[str, Any]:
    """A request body for a service (give name) or a version (give version)."""
    return {
        "inferenceConfig": {"entryScript": "behave_score.py", "sourceDirectory": str(SCRIPTS)},
        "deploymentConfig": {"numReplicas": 1},
        **settings,
    }


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mlfe"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


def score(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(url, json={}, headers={"Authorization": f"Bearer {key}", **headers})


def settings_of(view: dict[str, Any]) -> dict[str, Any]:
    """What a restart must keep: everything but the live replica counts and the URIs."""
    return {
        "authMode": view["authMode"],
        "createdTime": view["createdTime"],
        "versions": [
            {k: v for k, v in version.items() if k not in ("replicas", "state", "error")}
            for version in view["versions"]
        ],
    }


def test_a_router_killed_with_sigkill_restarts_with_everything(state_dir: Path) -> None:
    first = ServeProcess(state_dir)
    try:
        with first.client() as client:
            assert client.post(f"{API}/services", json=body(name="kept")).status_code == 202
            wait_for_state(client, "kept")
            version = body(version="b", trafficPercentile=30)
            assert client.post(f"{API}/services/kept/versions", json=version).status_code == 202
            wait_for_state(client, "kept")
            control = client.patch(f"{API}/services/kept/versions/b", json={"isControl": True})
            assert control.status_code == 200
            response = client.post(
                f"{API}/services/kept/regenerate-key",
                json={"keyType": "Secondary", "keyValue": "secondary-kept"},
            )
            assert response.status_code == 200
            token_config = {"numReplicas": 1, "authEnabled": False, "tokenAuthEnabled": True}
            tokens = body(name="tokens", deploymentConfig=token_config)
            assert client.post(f"{API}/services", json=tokens).status_code == 202
            token = client.post(f"{API}/services/tokens/token").json()["accessToken"]
            wait_for_state(client, "tokens")
            before = {v["name"]: v for v in client.get(f"{API}/services").json()}
            keys = client.get(f"{API}/services/kept/keys").json()
            replica_pid = score(before["kept"]["scoringUri"], keys["primaryKey"]).json()["pid"]
    finally:
        first.kill()  # SIGKILL: no chance to clean up
    assert first.process.returncode == -9
    assert wait_gone(replica_pid), "a replica outlived the router it belonged to"

    with ServeProcess(state_dir) as second, second.client() as client:
        assert client.get(f"{API}/services/kept/keys").json() == keys
        for name in ("kept", "tokens"):
            view = wait_for_state(client, name)
            assert view["state"] == "Healthy", view
            assert settings_of(view) == settings_of(before[name])
        kept = client.get(f"{API}/services/kept").json()
        assert score(kept["scoringUri"], "secondary-kept").status_code == 200
        pinned = score(kept["scoringUri"], keys["primaryKey"], **{"azureml-model-deployment": "b"})
        assert pinned.status_code == 200
        assert pinned.headers["azureml-model-deployment"] == "b"
        # The signing secret is stored too: a token issued before the crash still works.
        tokens_view = client.get(f"{API}/services/tokens").json()
        assert score(tokens_view["scoringUri"], token).status_code == 200


def test_sigterm_stops_every_replica(state_dir: Path) -> None:
    server = ServeProcess(state_dir)
    try:
        with server.client() as client:
            client.post(f"{API}/services", json=body(name="stopping"))
            view = wait_for_state(client, "stopping")
            key = client.get(f"{API}/services/stopping/keys").json()["primaryKey"]
            pid = score(view["scoringUri"], key).json()["pid"]
    finally:
        code = server.terminate()
    assert code == 0, server.log()
    assert not pid_alive(pid)
    assert "event=stopped" in server.log()


def test_the_admin_key_can_come_from_the_environment(state_dir: Path) -> None:
    with ServeProcess(state_dir, env={"MLFE_ADMIN_KEY": "admin-from-env"}) as server:
        assert not (state_dir / "admin.key").exists()
        with server.client() as client:
            assert client.get(f"{API}/services").status_code == 200
        with server.client(key="something-else") as client:
            assert client.get(f"{API}/services").status_code == 401


def test_the_router_lifts_a_low_soft_limit_on_open_files(state_dir: Path) -> None:
    # Each client connection is a file: a load test opens thousands (the replica side
    # is tested with real connections in tests/scoring_runtime/test_listen.py).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit on open files leaves nothing to lift")

    with ServeProcess(state_dir, preexec_fn=with_soft_open_files_limit(256)) as server:
        assert soft_open_files_limit(server.process.pid) > 256
        assert "event=open-files-limit-raised before=256" in server.log()


def test_the_kubernetes_backend_says_what_is_missing_without_a_traceback(
    state_dir: Path, tmp_path: Path
) -> None:
    def start(*args: str, **env: str) -> str:
        """The stderr of a start that must fail."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFE_")}
        environment.pop("KUBERNETES_SERVICE_HOST", None)
        command = [sys.executable, "-m", "router.serve", "--state-dir", str(state_dir)]
        result = subprocess.run(
            [*command, "--port", "0", "--backend", "kubernetes", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**environment, **env},
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        return result.stderr

    # Router pods must share one admin key.
    assert "MLFE_ADMIN_KEY is not set" in start()
    # No cluster configuration.
    missing = tmp_path / "no-such-kubeconfig"
    stderr = start("--kubeconfig", str(missing), MLFE_ADMIN_KEY="k")
    assert f"cannot load a Kubernetes configuration from {missing}" in stderr
    # A cluster that does not answer (a port nobody listens on).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    stderr = start("--kubeconfig", str(kubeconfig), MLFE_ADMIN_KEY="k")
    assert "the cluster store is unreachable" in stderr
