"""AZUREML_MODEL_DIR as Azure lays it out, and flags winning over environment variables
(scoring_runtime/models.py, config.py), seen from inside a running entry script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.runtime_proc import start_runtime
from tests.scoring_runtime.conftest import SCRIPTS

PROBE = SCRIPTS / "env_probe.py"
SLOW_INIT = SCRIPTS / "slow_init_reports_model_dir.py"


@pytest.fixture()
def model_files(tmp_path: Path) -> dict[str, Path]:
    single_file = tmp_path / "model.pkl"
    single_file.write_bytes(b"weights")
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "vocab.txt").write_text("a b c")
    return {"file": single_file, "folder": folder}


def _probe(**options) -> dict:
    with start_runtime(PROBE, **options) as runtime, runtime.client() as client:
        return client.post("/score", content=b"").json()


def test_one_model_dir_is_its_version_folder(model_files) -> None:
    result = _probe(args=["--model", f"diabetes:3:{model_files['file']}"])
    assert result["model_dir"].endswith(os.path.join("diabetes", "3"))
    assert result["files"] == ["model.pkl"]


def test_several_models_dir_holds_name_and_version_folders(model_files) -> None:
    result = _probe(
        args=[
            "--model",
            f"diabetes:3:{model_files['file']}",
            "--model",
            f"encoder:1:{model_files['folder']}",
        ]
    )
    assert result["files"] == [
        os.path.join("diabetes", "3", "model.pkl"),
        os.path.join("encoder", "1", "encoder", "vocab.txt"),
    ]


def test_model_layout_is_removed_at_exit(model_files) -> None:
    runtime = start_runtime(PROBE, args=["--model", f"m:1:{model_files['file']}"])
    with runtime.client() as client:
        model_dir = Path(client.post("/score", content=b"").json()["model_dir"])
    assert model_dir.exists()
    runtime.stop()
    assert not model_dir.exists()
    assert model_files["file"].exists()


def test_model_dir_flag_is_used_as_given(tmp_path: Path) -> None:
    result = _probe(args=["--model-dir", str(tmp_path)])
    assert result["model_dir"] == str(tmp_path)


def test_flags_win_over_environment_variables(tmp_path: Path) -> None:
    from_flag, from_env = tmp_path / "flag", tmp_path / "env"
    from_flag.mkdir()
    from_env.mkdir()
    with start_runtime(
        PROBE,
        args=[
            "--model-dir",
            str(from_flag),
            "--max-concurrent",
            "2",
            "--scoring-timeout-ms",
            "900",
        ],
        env={
            "AZUREML_MODEL_DIR": str(from_env),
            "MLFE_MAX_CONCURRENT": "5",
            "SCORING_TIMEOUT_MS": "7",
        },
    ) as runtime:
        with runtime.client() as client:
            assert client.post("/score", content=b"").json()["model_dir"] == str(from_flag)
        assert "slots=2" in runtime.ready_line
        assert "timeout_ms=900" in runtime.ready_line


def test_environment_variables_configure_the_runtime(tmp_path: Path) -> None:
    with start_runtime(
        None,
        env={
            "AZUREML_ENTRY_SCRIPT": str(PROBE),
            "AZUREML_MODEL_DIR": str(tmp_path),
            "MLFE_MAX_CONCURRENT": "3",
            "SCORING_TIMEOUT_MS": "1234",
        },
    ) as runtime:
        with runtime.client() as client:
            result = client.post("/score", content=b"").json()
        assert result["model_dir"] == str(tmp_path)
        assert result["entry_script"] == str(PROBE)
        assert "slots=3" in runtime.ready_line
        assert "timeout_ms=1234" in runtime.ready_line


def test_model_layout_is_removed_when_stopped_during_init(model_files, tmp_path: Path) -> None:
    report = tmp_path / "model_dir.txt"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scoring_runtime",
            "--entry-script",
            str(SLOW_INIT),
            "--model",
            f"m:1:{model_files['file']}",
            "--port",
            "0",
        ],
        env={**os.environ, "MODEL_DIR_REPORT": str(report)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not report.exists() or not report.read_text():
            assert time.monotonic() < deadline, "init() never started"
            time.sleep(0.05)
        model_dir = Path(report.read_text())
        assert model_dir.exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not model_dir.exists()
    finally:
        process.kill()
        process.wait()
