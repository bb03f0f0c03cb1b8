"""Looking at processes by command line or pid, to prove none outlived what started them."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    """Pids (other than this one) whose command line mentions `text`, e.g. a state dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command:
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def with_soft_open_files_limit(soft: int) -> Callable[[], None]:
    """For preexec_fn: the child starts with `soft` open files, its hard limit unchanged."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return lower


def soft_open_files_limit(pid: int) -> int:
    """The soft limit on open files of a running process, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open files line in /proc/{pid}/limits")
