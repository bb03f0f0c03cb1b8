"""The diabetes example as a user runs it: train, serve with the runtime, score, read swagger,
and `python3 dev.py run` (mlfe serve with the example deployed)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from openapi_spec_validator import validate

from tests.helpers.processes import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "diabetes"
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROWS = [
    [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
    [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
    [0.085, 0.051, 0.044, -0.006, -0.046, -0.034, -0.033, -0.003, 0.003, -0.026],
]
READY_TIMEOUT_S = 60.0
RUN_EXAMPLE_TIMEOUT_S = 120.0
CURL_LINE = re.compile(
    r"curl -H 'Authorization: Bearer (?P<key>[^']+)' .* (?P<uri>http://\S+/score)\n"
)


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    url: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll GET / until it answers 200; fail with the log if the process exits first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url} not ready after {READY_TIMEOUT_S} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> list[float]:
    """What the trained model itself predicts for ROWS."""
    model = joblib.load(model_dir / "diabetes.pkl")
    return [float(value) for value in model.predict(np.array(ROWS))]


def start_replica(script: str, model_dir: Path) -> Iterator[Replica]:
    port = free_port()
    # A file, not a pipe: nobody reads the log while the tests run, and a full pipe
    # would block the server.
    log = model_dir.parent / f"{script}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scoring_runtime",
                "--entry-script",
                str(EXAMPLE / script),
                "--model-dir",
                str(model_dir),
                "--port",
                str(port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url, log)
        yield Replica(process, url)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def numpy_replica(model_dir: Path) -> Iterator[Replica]:
    yield from start_replica("score.py", model_dir)


@pytest.fixture(scope="module")
def powerbi_replica(model_dir: Path) -> Iterator[Replica]:
    yield from start_replica("score_powerbi.py", model_dir)


def test_training_writes_the_model_file(model_dir: Path) -> None:
    assert (model_dir / "diabetes.pkl").stat().st_size > 0


def test_numpy_script_returns_the_models_predictions(
    numpy_replica: Replica, expected: list[float]
) -> None:
    response = httpx.post(numpy_replica.url + "/score", json={"data": ROWS})
    assert response.status_code == 200, response.text
    assert response.json() == pytest.approx(expected)


def test_numpy_script_accepts_the_issue_curl_line(numpy_replica: Replica) -> None:
    response = httpx.post(
        numpy_replica.url + "/score",
        content=b'{"data": [[1,2,3,4,5,6,7,8,9,10]]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()
    assert isinstance(prediction, float)


def test_numpy_script_rejects_the_wrong_number_of_features(numpy_replica: Replica) -> None:
    response = httpx.post(numpy_replica.url + "/score", json={"data": [[1.0, 2.0]]})
    # Azure's server calls this a failed run() (500); either way the client gets a message.
    assert response.status_code in (400, 500)
    assert "message" in response.json()


def test_powerbi_script_scores_named_columns_in_any_order(
    powerbi_replica: Replica, expected: list[float]
) -> None:
    records = [dict(reversed(list(zip(FEATURES, row, strict=True)))) for row in ROWS]
    response = httpx.post(powerbi_replica.url + "/score", json={"data": records})
    assert response.status_code == 200, response.text
    assert response.json() == pytest.approx(expected)


@pytest.mark.parametrize("version", ["2", "3", "3.1"])
@pytest.mark.parametrize("script", ["numpy", "powerbi"])
def test_swagger_is_valid_and_its_example_scores(
    request: pytest.FixtureRequest, script: str, version: str
) -> None:
    replica: Replica = request.getfixturevalue(f"{script}_replica")
    response = httpx.get(replica.url + "/swagger.json", params={"version": version})
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document)
    found = document["definitions"] if version == "2" else document["components"]["schemas"]
    example = found["ServiceInput"]["example"]
    if script == "powerbi":
        assert found["ServiceInput"]["properties"]["data"]["format"] == "pandas.DataFrame:records"
        assert list(example["data"][0]) == FEATURES
    else:
        assert found["ServiceInput"]["properties"]["data"]["format"] == "numpy.ndarray"
    # A client that builds its request from the document (as Power BI does) gets scored.
    scored = httpx.post(replica.url + "/score", json=example)
    assert scored.status_code == 200, scored.text
    assert len(scored.json()) == len(example["data"])


def wait_for_line(
    process: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str]
) -> re.Match[str]:
    """The first match of `pattern` in the log; fail if the process exits first."""
    deadline = time.monotonic() + RUN_EXAMPLE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"run_example.py exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    pytest.fail(
        f"run_example.py printed no curl line in {RUN_EXAMPLE_TIMEOUT_S} s:\n{log.read_text()}"
    )


def run_example(port: int, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFE_")}
    with log.open("wb") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "run_example.py"),
                "--port",
                str(port),
                "--state-dir",
                str(state_dir),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
        )


def test_run_example_deploys_on_mlfe_prints_a_working_curl_line_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    # This is `python3 dev.py run`; it trains into examples/diabetes/model (git-ignored)
    # when no model is there yet, exactly as a user's first run does. The state folder is
    # the test's own (short: replica sockets live in it), not the repository's .mlfe.
    port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="mlfe", dir="/tmp"))
    try:
        keys = []
        for run in ("first", "restored"):
            log = tmp_path / f"run_example_{run}.log"
            process = run_example(port, state_dir, log)
            try:
                curl = wait_for_line(process, log, CURL_LINE)
                key, uri = curl.group("key"), curl.group("uri")
                assert uri == f"http://127.0.0.1:{port}/api/v1/service/diabetes/score"
                response = httpx.post(
                    uri, json={"data": ROWS[:1]}, headers={"Authorization": f"Bearer {key}"}
                )
                assert response.status_code == 200, response.text
                assert len(response.json()) == 1
                assert httpx.post(uri, json={"data": ROWS[:1]}).status_code == 401
                keys.append(key)
                # SIGTERM reaches mlfe serve, which stops every replica before exiting.
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 0, log.read_text()
                assert processes_mentioning(str(state_dir)) == []
            finally:
                stop(process)
        # The second run found the service in the state folder instead of deploying it.
        assert "restored" in (tmp_path / "run_example_restored.log").read_text()
        assert keys[0] == keys[1]
    finally:
        for pid in processes_mentioning(str(state_dir)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(state_dir, ignore_errors=True)
