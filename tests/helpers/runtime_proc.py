"""Start a real scoring runtime process and wait until it is ready.

    with start_runtime(script, uds=True) as runtime:
        response = runtime.client().post("/score", content=b"...")

Readiness is the runtime's own signal: its `event=ready` log line, printed only after
init() succeeded and the socket listens. A process that exits first raises
`RuntimeExited` carrying its exit code and log, which is how failure tests inspect it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from tests.helpers.child_process import ChildProcess

_READY = re.compile(r"event=ready\b.*")
_PORT = re.compile(r"\bport=(\d+)")


class RuntimeExited(Exception):
    """The runtime exited before it became ready."""

    def __init__(self, returncode: int, log: str) -> None:
        super().__init__(f"scoring runtime exited with code {returncode}:\n{log}")
        self.returncode = returncode
        self.log = log


class RuntimeProcess(ChildProcess):
    """A running runtime: its address, log, and a way to stop it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log_path: Path,
        workdir: Path,
        ready_line: str,
        uds: Path | None,
    ) -> None:
        super().__init__(process)
        self.ready_line = ready_line
        self.uds = uds
        self._log_path = log_path
        self._workdir = workdir
        self._final_log: str | None = None
        port = _PORT.search(ready_line)
        self.port = int(port.group(1)) if port and uds is None else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port is not None else "http://localhost"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """An httpx client bound to this runtime (TCP or Unix socket)."""
        transport = httpx.HTTPTransport(uds=str(self.uds)) if self.uds is not None else None
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)

    def async_client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.uds)) if self.uds is not None else None
        return httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout)

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._final_log is not None:
            return self._final_log
        return self._log_path.read_text(errors="replace")

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, then SIGKILL after `timeout`; keeps the log and removes the temporary
        folder. Returns the exit code."""
        returncode = super().stop(timeout)
        if self._final_log is None:
            self._final_log = self._log_path.read_text(errors="replace")
            shutil.rmtree(self._workdir, ignore_errors=True)
        return returncode


def start_runtime(
    entry_script: str | os.PathLike[str] | None,
    *,
    args: Sequence[str] = (),
    uds: bool | str | os.PathLike[str] = False,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready_timeout: float = 60.0,
    preexec_fn: Callable[[], object] | None = None,
) -> RuntimeProcess:
    """Start `python -m scoring_runtime` on a free TCP port (or a Unix socket) and wait.

    `uds=True` listens on a socket in a fresh temporary folder, a path on that path.
    `args` are extra flags; `env` is added to this process's environment (a value of
    "" removes the variable); `preexec_fn` runs in the child before it starts (to set
    resource limits, say). Raises RuntimeExited when the process stops before ready.
    """
    # Short path: Unix socket paths are limited to ~100 characters.
    workdir = Path(tempfile.mkdtemp(prefix="mlfe", dir="/tmp"))
    log_path = workdir / "runtime.log"
    socket_path = None
    if uds is True:
        socket_path = workdir / "r.sock"
    elif uds:
        socket_path = Path(uds)

    command = [sys.executable, "-m", "scoring_runtime"]
    if entry_script is not None:
        command += ["--entry-script", str(entry_script)]
    command += ["--uds", str(socket_path)] if socket_path else ["--port", "0"]
    command += list(args)

    environment = dict(os.environ)
    # The runtime reads these; the test process's own values must not leak in.
    for name in (
        "AZUREML_ENTRY_SCRIPT",
        "AZUREML_SOURCE_DIRECTORY",
        "AZUREML_MODEL_DIR",
        "SCORING_TIMEOUT_MS",
        "AML_CORS_ORIGINS",
        "MLFE_MAX_CONCURRENT",
    ):
        environment.pop(name, None)
    for name, value in (env or {}).items():
        if value == "":
            environment.pop(name, None)
        else:
            environment[name] = value
    environment["PYTHONUNBUFFERED"] = "1"

    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + ready_timeout
    while True:
        text = log_path.read_text(errors="replace")
        ready = _READY.search(text)
        if ready:
            return RuntimeProcess(process, log_path, workdir, ready.group(0), socket_path)
        if process.poll() is not None:
            text = log_path.read_text(errors="replace")
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeExited(process.returncode, text)
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            shutil.rmtree(workdir, ignore_errors=True)
            raise TimeoutError(f"scoring runtime not ready after {ready_timeout} s:\n{text}")
        time.sleep(0.02)


def run_runtime_to_exit(
    entry_script: str | os.PathLike[str] | None,
    *,
    args: Sequence[str] = (),
    uds: bool | str | os.PathLike[str] = False,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> RuntimeExited:
    """Start a runtime expected to fail at startup and return how it exited."""
    try:
        runtime = start_runtime(entry_script, args=args, uds=uds, env=env, ready_timeout=timeout)
    except RuntimeExited as exited:
        return exited
    runtime.stop()
    raise AssertionError(f"the runtime became ready: {runtime.ready_line}")
