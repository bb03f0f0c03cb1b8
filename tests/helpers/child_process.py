"""A process a test started, stopped however the test ends so none outlives it."""

from __future__ import annotations

import signal
import subprocess
from types import TracebackType
from typing import TypeVar

_Child = TypeVar("_Child", bound="ChildProcess")


class ChildProcess:
    """Wraps a child process; leaving a `with` block calls `stop()`.

    Subclasses that keep more (a log, a temporary folder) extend `stop()`.
    """

    # Seconds a SIGTERM gets before SIGKILL: what a graceful shutdown may take.
    stop_timeout = 10.0

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, then SIGKILL after `timeout` (default `stop_timeout`); returns the exit
        code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self: _Child) -> _Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
