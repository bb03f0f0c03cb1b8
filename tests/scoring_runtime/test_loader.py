"""Loading the entry script and running init() (scoring_runtime/loader.py, __main__.py):
failures exit with code 3 before any socket is bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.runtime_proc import run_runtime_to_exit, start_runtime
from tests.scoring_runtime.conftest import SCRIPTS


def test_init_failure_exits_3_with_the_traceback_in_the_log() -> None:
    exited = run_runtime_to_exit(SCRIPTS / "init_fails.py")
    assert exited.returncode == 3
    assert "event=init_failed" in exited.log
    assert "Traceback" in exited.log
    assert "FileNotFoundError: model.pkl is not in AZUREML_MODEL_DIR" in exited.log
    assert "event=ready" not in exited.log


def test_init_failure_never_binds_the_unix_socket() -> None:
    socket_path = Path("/tmp") / f"mlfe-never-{os.getpid()}.sock"
    exited = run_runtime_to_exit(SCRIPTS / "init_fails.py", uds=socket_path)
    assert exited.returncode == 3
    assert not socket_path.exists()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("no_run.py", "does not define a run() function"),
        ("import_fails.py", "ModuleNotFoundError"),
        ("raw_and_schema.py", "both @rawhttp and @input_schema"),
        ("missing.py", "does not exist"),
    ],
)
def test_load_failures_exit_3_naming_the_problem(script: str, expected: str) -> None:
    exited = run_runtime_to_exit(SCRIPTS / script)
    assert exited.returncode == 3
    assert "event=load_failed" in exited.log
    assert expected in exited.log


def test_malformed_flags_exit_2() -> None:
    exited = run_runtime_to_exit(SCRIPTS / "echo_text.py", args=["--max-concurrent", "0"])
    assert exited.returncode == 2
    assert "at least 1" in exited.log


def test_source_dir_is_on_sys_path_for_helper_modules() -> None:
    script = SCRIPTS / "app_with_helper" / "score.py"
    with start_runtime(script) as runtime, runtime.client() as client:
        response = client.post("/score", content=b"x")
    assert response.json() == {"helper": "from the source directory"}


def test_entry_script_may_be_named_relative_to_the_source_dir() -> None:
    source = SCRIPTS / "app_with_helper"
    with (
        start_runtime(
            None, args=["--entry-script", "score.py", "--source-dir", str(source)]
        ) as runtime,
        runtime.client() as client,
    ):
        assert client.post("/score", content=b"x").status_code == 200


def test_sigterm_stops_the_runtime_cleanly() -> None:
    runtime = start_runtime(SCRIPTS / "echo_text.py", uds=True)
    socket_path = runtime.uds
    assert socket_path is not None and socket_path.exists()
    assert runtime.stop() == 0
    assert "event=stopped" in runtime.log()
    assert not socket_path.exists()
