"""`python -m router.serve` as a child process of a test: start, talk to, stop or kill.

The router logs `event=serving url=...` once it listens (port 0 picks a free one); that
line is the readiness signal and the address.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.child_process import ChildProcess
from tests.helpers.processes import pid_alive

_SERVING = re.compile(r"event=serving url=(\S+)")


class ServeExited(Exception):
    pass


class ServeProcess(ChildProcess):
    # The router drains requests and stops its replicas first.
    stop_timeout = 30.0

    def __init__(
        self,
        state_dir: Path,
        *,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"{state_dir.name}-serve.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFE_")}
        environment.update(env or {})
        with open(self.log_path, "ab") as log:
            self.offset = log.tell()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "router.serve",
                    "--state-dir",
                    str(state_dir),
                    "--port",
                    "0",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                preexec_fn=preexec_fn,
            )
        super().__init__(process)
        self.url = self._wait_for_url(ready_timeout)
        key = environment.get("MLFE_ADMIN_KEY") or (state_dir / "admin.key").read_text().strip()
        self.admin_key = key

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = _SERVING.search(self.log())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise ServeExited(
                    f"mlfe serve exited with {self.process.returncode}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServeExited(f"mlfe serve did not start:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def client(self, *, key: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """A client of the management API (and the router), with the admin key."""
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def terminate(self, timeout: float | None = None) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        return self.stop(timeout)


def wait_for_state(
    client: httpx.Client, name: str, *, timeout: float = 30.0, settled: bool = True
) -> dict[str, Any]:
    """The service's view once it is no longer Transitioning."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/manage/services/{name}")
        assert response.status_code == 200, response.text
        view = response.json()
        if view["state"] != "Transitioning" or not settled:
            return view
        assert time.monotonic() < deadline, f"{name} still Transitioning: {view}"
        time.sleep(0.05)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
