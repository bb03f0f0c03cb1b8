"""benchmarks/harness.py's placement readings, on real processes pinned to CPUs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from benchmarks.harness import PlacementMeter, busiest_process, last_cpu

BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"
# A parent that only waits on a child that spins: nginx's master and worker in miniature.
PARENT_OF_BUSY = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BUSY!r}])\n"

needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell them apart"
)


@contextmanager
def spinning(code: str = BUSY, cpu: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        if cpu is not None:
            os.sched_setaffinity(process.pid, {cpu})
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the child of PARENT_OF_BUSY too
        process.wait()


def two_cpus() -> tuple[int, int]:
    first, second, *_ = sorted(os.sched_getaffinity(0))
    return first, second


@needs_two_cpus
def test_last_cpu_reads_where_a_pinned_process_runs() -> None:
    _, second = two_cpus()
    with spinning(cpu=second) as process:
        time.sleep(0.2)
        assert last_cpu(process.pid) == second


def test_last_cpu_of_a_process_that_is_gone_is_none() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert last_cpu(process.pid) is None


@needs_two_cpus
def test_placement_meter_tells_one_core_from_two() -> None:
    first, second = two_cpus()
    with spinning(cpu=first) as a, spinning(cpu=first) as b, spinning(cpu=second) as c:
        time.sleep(0.2)
        together = PlacementMeter(a.pid, b.pid, interval=0.01)
        apart = PlacementMeter(a.pid, c.pid, interval=0.01)
        time.sleep(0.5)
        assert together.shared_share() == 1.0
        assert apart.shared_share() == 0.0


def test_busiest_process_is_the_child_doing_the_work() -> None:
    with spinning(PARENT_OF_BUSY) as parent:
        deadline = time.monotonic() + 10
        while (busiest := busiest_process(parent.pid)) == parent.pid:
            assert time.monotonic() < deadline, "the child never outran its parent"
            time.sleep(0.1)
        assert busiest != parent.pid
        with open(f"/proc/{busiest}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[1]) == parent.pid
