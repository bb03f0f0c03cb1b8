"""The `mlfe` command line end to end: real `mlfe` processes against a real `mlfe serve`.

One server for the module (state in a fresh short folder, a free port, the admin key
read from the file the server writes) and fast one-slot replicas of behave_score.py.
The tests run in file order as a user's session would: deploy, inspect, score, rotate
keys, roll out a version and back, break things on purpose, delete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import processes_mentioning
from tests.helpers.runtime_proc import start_runtime

SCRIPTS = Path(__file__).parent / "scripts"
BIN = Path(sys.executable).parent
SERVER_READY_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0
# One fixed replica that takes one request at a time: fast to start, enough to score.
FAST_DC = {"numReplicas": 1, "scoringTimeoutMs": 10000}
VERSION_HEADER = "azureml-model-deployment"
# Any frame in the CLI package means a traceback reached the user.
CLI_SOURCE = str(Path(__file__).resolve().parents[2] / "router" / "cli") + os.sep


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mlfe_argv() -> list[str]:
    """The installed console script, as a user runs it."""
    script = BIN / "mlfe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "router.cli"]


def clean_environment() -> dict[str, str]:
    environment = dict(os.environ)
    for name in ("MLFE_URL", "MLFE_ADMIN_KEY", "MLFE_STATE_DIR"):
        environment.pop(name, None)
    return environment


@dataclass
class Server:
    url: str
    state_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Project:
    """A user's folder: configs in config/, the script in src/, a model file in model/."""

    root: Path

    def write_ic(self, name: str, script: str, variables: Mapping[str, str]) -> Path:
        path = self.root / "config" / name
        path.write_text(
            json.dumps(
                {
                    "entryScript": script,
                    "sourceDirectory": "../src",
                    "environment": {"environmentVariables": dict(variables)},
                }
            )
        )
        return path

    def write_dc(self, name: str, config: Mapping[str, Any]) -> Path:
        path = self.root / "config" / name
        path.write_text(json.dumps(config))
        return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Mlfe:
    """Runs `mlfe ...` in the project folder with the server's URL and state dir."""

    def __init__(self, server: Server, cwd: Path) -> None:
        self.server = server
        self.cwd = cwd
        self.environment = clean_environment()
        self.environment["MLFE_URL"] = server.url
        self.environment["MLFE_STATE_DIR"] = str(server.state_dir)

    def __call__(self, *args: str, environment: Mapping[str, str] | None = None) -> Result:
        completed = subprocess.run(
            [*mlfe_argv(), *args],
            cwd=self.cwd,
            env=dict(environment if environment is not None else self.environment),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        # An error is a message; a traceback through the CLI's own code is a bug.
        assert CLI_SOURCE not in completed.stderr, completed.stderr
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.code == 0, f"mlfe {' '.join(args)} -> {result.code}\n{result.err}"
        return result

    def show(self, name: str) -> dict[str, Any]:
        view: dict[str, Any] = self.ok("service", "show", name, "--json").json()
        return view

    def keys(self, name: str) -> dict[str, str]:
        keys: dict[str, str] = self.ok("service", "keys", name, "--json").json()
        return keys


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # Short: replica sockets live under STATE/replicas/<service>/<version>/.
    state_dir = Path(tempfile.mkdtemp(prefix="mlfe", dir="/tmp"))
    workdir = Path(tempfile.mkdtemp(prefix="mlfe-serve-cwd"))
    port = free_port()
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*mlfe_argv(), "serve", "--port", str(port), "--state-dir", str(state_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,  # not the project folder: relative paths must not work by luck
            env=clean_environment(),
        )
    running = Server(f"http://127.0.0.1:{port}", state_dir, process, log_path)
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlfe serve exited with {process.returncode}:\n{running.log()}")
            try:
                if httpx.get(running.url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlfe serve not ready:\n{running.log()}")
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        leftovers = processes_mentioning(str(state_dir))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        assert not leftovers, f"replicas outlived mlfe serve: {leftovers}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    for folder in ("config", "src", "model"):
        (root / folder).mkdir()
    shutil.copy(SCRIPTS / "behave_score.py", root / "src" / "behave_score.py")
    (root / "src" / "broken_score.py").write_text(
        "def init():\n"
        "    raise FileNotFoundError('weights.bin is missing: cli-broken-marker')\n\n\n"
        "def run(data):\n"
        "    return data\n"
    )
    (root / "model" / "weights.txt").write_text("42\n")
    return Project(root)


@pytest.fixture(scope="module")
def mlfe(server: Server, project: Project) -> Mlfe:
    return Mlfe(server, project.root)


@pytest.fixture(scope="module")
def deployed(mlfe: Mlfe, project: Project) -> Result:
    """`mlfe deploy` of the service `alpha`, with paths relative to the project folder."""
    ic = project.write_ic("alpha-ic.json", "behave_score.py", {"MLFE_TEST_VERSION": "alpha"})
    dc = project.write_dc("fast-dc.json", FAST_DC)
    return mlfe(
        "deploy",
        "-n",
        "alpha",
        "--ic",
        str(ic.relative_to(project.root)),
        "--dc",
        str(dc.relative_to(project.root)),
        "-m",
        "weights:1:model/weights.txt",
    )


def score(
    uri: str, key: str | None, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return httpx.post(uri, json=dict(body), headers=sent, timeout=30.0)


def test_deploy_waits_until_healthy_and_shows_the_service(deployed: Result) -> None:
    assert deployed.code == 0, deployed.err
    # Azure's wait_for_deployment(show_output=True): Running ... Succeeded, on stderr.
    assert "Running" in deployed.err
    assert "Succeeded" in deployed.err
    assert "Healthy" in deployed.out
    assert "/api/v1/service/alpha/score" in deployed.out


def test_show_prints_state_uris_and_versions(mlfe: Mlfe, deployed: Result) -> None:
    view = mlfe.show("alpha")
    assert view["state"] == "Healthy"
    assert view["authMode"] == "key"
    assert view["scoringUri"] == f"{mlfe.server.url}/api/v1/service/alpha/score"
    (version,) = view["versions"]
    assert version["name"] == "alpha"
    assert version["isDefault"] is True
    assert version["replicas"]["ready"] == 1

    text = mlfe.ok("service", "show", "alpha").out
    for expected in ("Healthy", view["scoringUri"], view["swaggerUri"], "VERSION", "100%"):
        assert expected in text


def test_list_shows_every_service(mlfe: Mlfe, deployed: Result) -> None:
    names = [service["name"] for service in mlfe.ok("service", "list", "--json").json()]
    assert "alpha" in names
    # The flags do what the environment variables do (the key comes from STATE/admin.key).
    flags = ("--url", mlfe.server.url, "--state-dir", str(mlfe.server.state_dir))
    by_flags = mlfe(*flags, "service", "list", "--json", environment=clean_environment())
    assert by_flags.code == 0, by_flags.err
    assert [service["name"] for service in by_flags.json()] == names
    table = mlfe.ok("service", "list").out.splitlines()
    assert table[0].split()[:2] == ["NAME", "STATE"]
    assert any(line.split()[:2] == ["alpha", "Healthy"] for line in table[1:])


def test_the_shown_key_scores_and_no_key_is_refused(mlfe: Mlfe, deployed: Result) -> None:
    uri = mlfe.show("alpha")["scoringUri"]
    keys = mlfe.keys("alpha")
    for key in (keys["primaryKey"], keys["secondaryKey"]):
        response = score(uri, key, {"echo": "hello"})
        assert response.status_code == 200, response.text
        assert response.json()["echo"] == "hello"
        # The inference config's environment variables reach the replica.
        assert response.json()["version"] == "alpha"
    assert score(uri, None, {"echo": 1}).status_code == 401

    text = mlfe.ok("service", "keys", "alpha").out
    assert keys["primaryKey"] in text
    assert keys["secondaryKey"] in text


def test_regenerated_keys_replace_the_old_ones_at_once(mlfe: Mlfe, deployed: Result) -> None:
    uri = mlfe.show("alpha")["scoringUri"]
    old = mlfe.keys("alpha")

    chosen = "a-key-the-user-chose-0123456789"
    answer = mlfe.ok(
        "service", "regen-key", "alpha", "--key", "Secondary", "--value", chosen, "--json"
    ).json()
    assert answer == {"primaryKey": old["primaryKey"], "secondaryKey": chosen}
    assert score(uri, old["secondaryKey"], {}).status_code == 401
    assert score(uri, chosen, {}).status_code == 200

    text = mlfe.ok("service", "regen-key", "alpha", "--key", "primary").out
    new_primary = mlfe.keys("alpha")["primaryKey"]
    assert new_primary != old["primaryKey"]
    assert new_primary in text
    assert score(uri, old["primaryKey"], {}).status_code == 401
    assert score(uri, new_primary, {}).status_code == 200


def test_deploy_no_wait_returns_while_transitioning_and_token_auth_works(
    mlfe: Mlfe, project: Project, deployed: Result
) -> None:
    ic = project.write_ic("beta-ic.json", "behave_score.py", {"MLFE_TEST_VERSION": "beta"})
    dc = project.write_dc("token-dc.json", {**FAST_DC, "tokenAuthEnabled": True})
    answer = mlfe.ok(
        "deploy", "-n", "beta", "--ic", str(ic), "--dc", str(dc), "--no-wait", "--json"
    ).json()
    assert answer["name"] == "beta"
    assert answer["state"] == "Transitioning"
    assert answer["authMode"] == "token"

    # Tokens exist only in token mode; a key-mode service says so.
    refused = mlfe("service", "get-access-token", "alpha")
    assert refused.code == 1
    assert refused.err.startswith("error: ")

    token = mlfe.ok("service", "get-access-token", "beta", "--json").json()
    assert token["tokenType"] == "Bearer"
    assert token["refreshAfter"] < token["expiryOn"]
    text = mlfe.ok("service", "get-access-token", "beta").out
    assert "accessToken" in text
    assert "expiryOn" in text

    deadline = time.monotonic() + 60
    while mlfe.show("beta")["state"] == "Transitioning" and time.monotonic() < deadline:
        time.sleep(0.2)
    uri = mlfe.show("beta")["scoringUri"]
    scored = score(uri, token["accessToken"], {"echo": "token"})
    assert scored.status_code == 200, scored.text
    assert scored.json()["version"] == "beta"
    assert score(uri, "not-a-token", {}).status_code == 401


def test_a_version_rolls_out_takes_traffic_becomes_default_and_is_removed(
    mlfe: Mlfe, project: Project, deployed: Result
) -> None:
    ic = project.write_ic("green-ic.json", "behave_score.py", {"MLFE_TEST_VERSION": "green"})
    dc = project.write_dc("fast-dc.json", FAST_DC)
    created = mlfe(
        "endpoint",
        "create-version",
        "alpha",
        "--version",
        "green",
        "--ic",
        str(ic),
        "--dc",
        str(dc),
        "--traffic",
        "30",
    )
    assert created.code == 0, created.err
    assert "Succeeded" in created.err

    versions = {version["name"]: version for version in mlfe.show("alpha")["versions"]}
    assert versions["green"]["trafficPercentile"] == 30
    assert versions["green"]["isDefault"] is False
    assert versions["alpha"]["effectiveTrafficPercentile"] == 70
    uri = mlfe.show("alpha")["scoringUri"]
    key = mlfe.keys("alpha")["primaryKey"]
    pinned = score(uri, key, {}, headers={VERSION_HEADER: "green"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["version"] == "green"
    assert pinned.headers[VERSION_HEADER] == "green"

    promote = ("--version", "green", "--traffic", "40", "--default")
    mlfe.ok("endpoint", "update-version", "alpha", *promote)
    versions = {version["name"]: version for version in mlfe.show("alpha")["versions"]}
    assert versions["green"]["isDefault"] is True
    assert versions["green"]["trafficPercentile"] == 40
    assert versions["alpha"]["isDefault"] is False
    shown = mlfe.ok("service", "show", "alpha").out
    assert any(line.split()[:2] == ["green", "yes"] for line in shown.splitlines())

    # The default version cannot go; the message says what to do instead.
    refused = mlfe("endpoint", "delete-version", "alpha", "--version", "green")
    assert refused.code == 1
    assert "default" in refused.err

    mlfe.ok("endpoint", "update-version", "alpha", "--version", "alpha", "--default")
    mlfe.ok("endpoint", "delete-version", "alpha", "--version", "green")
    view = mlfe.show("alpha")
    assert [version["name"] for version in view["versions"]] == ["alpha"]
    assert view["state"] == "Healthy"
    assert score(uri, key, {}).json()["version"] == "alpha"


def test_service_update_changes_the_default_versions_configuration(
    mlfe: Mlfe, project: Project, deployed: Result
) -> None:
    ic = project.write_ic("alpha2-ic.json", "behave_score.py", {"MLFE_TEST_VERSION": "alpha-2"})
    result = mlfe.ok("service", "update", "alpha", "--ic", str(ic))
    assert "Succeeded" in result.err
    uri = mlfe.show("alpha")["scoringUri"]
    key = mlfe.keys("alpha")["primaryKey"]
    assert score(uri, key, {}).json()["version"] == "alpha-2"


def test_logs_show_each_replicas_last_lines(mlfe: Mlfe, deployed: Result) -> None:
    logs = mlfe.ok("service", "logs", "alpha", "--tail", "50", "--json").json()
    assert logs["version"] == "alpha"
    assert logs["replicas"]
    assert any("event=ready" in replica["log"] for replica in logs["replicas"])
    text = mlfe.ok("service", "logs", "alpha", "--version", "alpha", "--tail", "5").out
    assert "replica" in text
    assert len(mlfe.ok("service", "logs", "alpha", "--tail", "1", "--json").json()["replicas"])


def test_a_failing_init_fails_the_deploy_with_the_traceback(mlfe: Mlfe, project: Project) -> None:
    ic = project.write_ic("broken-ic.json", "broken_score.py", {})
    dc = project.write_dc("fast-dc.json", FAST_DC)
    result = mlfe("deploy", "-n", "broken", "--ic", str(ic), "--dc", str(dc))
    assert result.code == 1
    assert "Failed" in result.err
    assert "cli-broken-marker" in result.err  # the init() traceback's last line
    assert mlfe.show("broken")["state"] == "Failed"
    mlfe.ok("service", "delete", "broken")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"autoScaler": {"minReplicas": 3, "maxReplicas": 2}}, "autoScaler.maxReplicas"),
        ({"autoscaler": {"minReplicas": 1}}, "autoscaler"),
        ({"authEnabled": True, "tokenAuthEnabled": True}, "tokenAuthEnabled"),
    ],
)
def test_an_invalid_deployment_config_is_refused_naming_the_key(
    mlfe: Mlfe, project: Project, config: dict[str, Any], named: str
) -> None:
    ic = project.write_ic("gamma-ic.json", "behave_score.py", {})
    dc = project.write_dc("invalid-dc.json", config)
    result = mlfe("deploy", "-n", "gamma", "--ic", str(ic), "--dc", str(dc))
    assert result.code == 1
    assert result.err.startswith("error: ")
    assert named in result.err
    assert "gamma" not in [s["name"] for s in mlfe.ok("service", "list", "--json").json()]


def test_conflicts_and_unknown_names_are_errors_with_messages(
    mlfe: Mlfe, project: Project, deployed: Result
) -> None:
    ic = project.write_ic("alpha-ic.json", "behave_score.py", {})
    again = mlfe("deploy", "-n", "alpha", "--ic", str(ic))
    assert again.code == 1
    assert "alpha" in again.err

    unknown = mlfe("service", "show", "nosuchservice")
    assert unknown.code == 1
    assert "nosuchservice" in unknown.err

    missing_file = mlfe("deploy", "-n", "delta", "--ic", "config/nothing.json")
    assert missing_file.code == 1
    assert "config/nothing.json" in missing_file.err


def test_usage_errors_exit_2(mlfe: Mlfe) -> None:
    assert mlfe("service", "regen-key", "alpha").code == 2  # --key is required
    assert mlfe("service", "regen-key", "alpha", "--key", "Tertiary").code == 2
    assert mlfe("deploy", "-n", "x", "--ic", "a.json", "-m", "no-colons").code == 2
    nothing = mlfe("endpoint", "update-version", "alpha", "--version", "alpha")
    assert nothing.code == 2
    assert "--traffic" in nothing.err


def test_a_wrong_admin_key_is_refused(mlfe: Mlfe) -> None:
    result = mlfe("service", "list", "--admin-key", "wrong")
    assert result.code == 1
    assert "admin key" in result.err


def test_an_unreachable_server_gets_a_clear_message(mlfe: Mlfe) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = mlfe("--url", url, "service", "list", "--admin-key", "any")
    assert result.code == 1
    assert result.err.strip() == f"error: cannot reach mlfe at {url}: is `mlfe serve` running?"


def test_a_service_of_replica_urls_deploys_without_models_and_shows_them(
    mlfe: Mlfe, project: Project
) -> None:
    with start_runtime(SCRIPTS / "behave_score.py", env={"MLFE_TEST_VERSION": "theirs"}) as theirs:
        ic = project.root / "config" / "byo-ic.json"
        ic.write_text(json.dumps({"replicaUrls": [theirs.base_url]}))
        result = mlfe("deploy", "-n", "byo", "--ic", str(ic.relative_to(project.root)))
        assert result.code == 0, result.err
        assert "Succeeded" in result.err
        view = mlfe.show("byo")
        (version,) = view["versions"]
        assert version["inferenceConfig"] == {"replicaUrls": [theirs.base_url]}
        assert version["replicas"]["ready"] == 1
        assert (
            f"version byo replica urls: {theirs.base_url}" in mlfe.ok("service", "show", "byo").out
        )
        response = score(view["scoringUri"], mlfe.keys("byo")["primaryKey"], {})
        assert response.status_code == 200, response.text
        assert response.json()["pid"] == theirs.pid
        assert response.json()["version"] == "theirs"

        local = mlfe("run-local", "--ic", str(ic))
        assert local.code == 1
        assert "replicaUrls" in local.err
        mlfe.ok("service", "delete", "byo")


def test_delete_removes_the_service(mlfe: Mlfe, deployed: Result) -> None:
    for name in ("alpha", "beta"):
        result = mlfe.ok("service", "delete", name)
        assert name in result.out or "deleted" in result.out.lower()
    assert mlfe.ok("service", "list", "--json").json() == []
    assert mlfe("service", "show", "alpha").code == 1


def test_run_local_serves_one_replica_in_the_foreground(project: Project, tmp_path: Path) -> None:
    port = free_port()
    ic = project.write_ic("local-ic.json", "behave_score.py", {"MLFE_TEST_VERSION": "local"})
    log_path = tmp_path / "run-local.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*mlfe_argv(), "run-local", "--ic", str(ic), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environment(),
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/score", json={"echo": 7})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == "local"
        # The runtime replaced the CLI process: the signal reaches the server itself.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
