"""What every benchmark script needs: servers in their own process groups, their CPU time
from /proc, free ports and a description of the machine the figures came from."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOOP_SCRIPT = Path(__file__).resolve().parent / "scripts" / "noop_score.py"
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: its name in the results, its argv and where it answers
    `GET /` once ready (an http:// URL, or unix:PATH for a Unix socket)."""

    name: str
    argv: tuple[str, ...]
    ready_url: str
    env: tuple[tuple[str, str], ...] = ()
    # A session of its own is a scheduling group of its own under the kernel's autogroup
    # scheduling, which changes where the server runs relative to the others
    # (benchmarks/README.md, "Where the replicas run"); by default every server stays in the
    # benchmark's session.
    own_session: bool = False


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def running(spec: ServerSpec, log_dir: Path) -> Iterator[RunningServer]:
    """Start a server in its own process group; stop the whole group on exit."""
    log_path = log_dir / f"{spec.name}.log"
    env = {**os.environ, **dict(spec.env)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            spec.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            env=env,
            start_new_session=spec.own_session,
            preexec_fn=None if spec.own_session else os.setpgrp,
        )
    server = RunningServer(spec, process, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(process)


def wait_ready(server: RunningServer) -> None:
    url = server.spec.ready_url
    transport = None
    if url.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=url.removeprefix("unix:"))
        url = "http://localhost/"
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(transport=transport, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.spec.name} exited with {server.process.returncode} before it "
                    f"was ready; log:\n{server.log_path.read_text(errors='replace')[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{server.spec.name} not ready after {READY_TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers can outlive a killed leader; the group signal reaches them too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks: utime + stime + reaped children's cutime + cstime)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may itself contain spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), sum(int(value) for value in fields[11:15])


def tree_cpu_ticks(root_pid: int) -> dict[int, int]:
    """CPU ticks of `root_pid` and every descendant, by pid."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents[int(entry)], ticks[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        if pid in ticks:
            found[pid] = ticks[pid]
            pending.extend(children.get(pid, ()))
    return found


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    ticks = sum(value - before.get(pid, 0) for pid, value in after.items())
    return ticks / CLOCK_TICKS


class CpuMeter:
    """CPU seconds used by several process trees over one bracketed interval."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._before = [tree_cpu_ticks(pid) for pid in self._pids]

    def seconds(self) -> list[float]:
        return [
            cpu_seconds_between(before, tree_cpu_ticks(pid))
            for pid, before in zip(self._pids, self._before, strict=True)
        ]


def last_cpu(pid: int) -> int | None:
    """The CPU a process (its main thread) last ran on, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[36])


def busiest_process(root_pid: int) -> int:
    """The process of a tree that has used the most CPU: nginx's worker, not its master."""
    ticks = tree_cpu_ticks(root_pid)
    return max(ticks, key=ticks.__getitem__, default=root_pid)


class PlacementMeter:
    """How often two processes were last seen on the same CPU, sampled every `interval`
    seconds over one bracketed interval.

    On a machine with few cores this decides a proxy's throughput as much as its code:
    the kernel tends to wake a process on its waker's CPU, and a proxy sharing one core
    with its replica serves far fewer requests than the same two on separate cores. The
    share is recorded, not controlled, so each round's figure can be read with it."""

    def __init__(self, first: int, second: int, interval: float = 0.02) -> None:
        self._pids = (first, second)
        self._interval = interval
        self._same = self._samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(self._interval):
            first, second = (last_cpu(pid) for pid in self._pids)
            if first is not None and second is not None:
                self._samples += 1
                self._same += first == second

    def shared_share(self) -> float:
        """Stop sampling; the share of samples with both processes on one CPU."""
        self._done.set()
        self._thread.join()
        return self._same / self._samples if self._samples else 0.0


def _machine_ticks() -> tuple[int, int]:
    """Busy and total clock ticks of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(field) for field in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    # guest time is already counted in user and nice
    total = sum(fields[:8])
    return total - idle, total


class MachineMeter:
    """Share of the whole machine's CPU time that was busy over one bracketed interval:
    whether a run was bound by CPU or by waiting."""

    def __init__(self) -> None:
        self._before = _machine_ticks()

    def busy_share(self) -> float:
        busy, total = _machine_ticks()
        elapsed = total - self._before[1]
        return (busy - self._before[0]) / elapsed if elapsed else 0.0


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "clock_ticks_per_s": CLOCK_TICKS,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def median(values: Iterable[float]) -> float:
    """The middle value (the upper one of an even count): what a benchmark reports."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def runtime_argv(*args: str, entry_script: Path = NOOP_SCRIPT) -> tuple[str, ...]:
    """The command line of one `python -m scoring_runtime` replica serving `entry_script`."""
    return (sys.executable, "-m", "scoring_runtime", "--entry-script", str(entry_script), *args)


def save_report(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark's results as indented JSON, creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
