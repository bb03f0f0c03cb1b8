"""The limit on open files (scoring_runtime/listen.py): a replica started under a low soft
limit still takes more connections than that limit, as a load test opens them."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from scoring_runtime.listen import OPEN_FILES_CEILING
from tests.helpers.processes import soft_open_files_limit, with_soft_open_files_limit
from tests.helpers.runtime_proc import start_runtime

SCRIPTS = Path(__file__).parent / "scripts"
LOW_SOFT_LIMIT = 256
CONNECTIONS = 400  # well past the low soft limit

_, HARD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)
needs_room = pytest.mark.skipif(
    HARD_LIMIT != resource.RLIM_INFINITY and HARD_LIMIT < 4 * CONNECTIONS,
    reason="the hard limit on open files is too low to tell a raised soft limit apart",
)


def expected_raised_limit() -> int:
    if HARD_LIMIT == resource.RLIM_INFINITY:
        return OPEN_FILES_CEILING
    return min(HARD_LIMIT, OPEN_FILES_CEILING)


async def health_over_connections(port: int, count: int) -> list[bytes]:
    """Open `count` connections at once, then ask GET / on each: the status lines."""
    opened = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
    )
    try:
        for _, writer in opened:
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        return await asyncio.wait_for(
            asyncio.gather(*(reader.readline() for reader, _ in opened)), timeout=30
        )
    finally:
        for _, writer in opened:
            writer.close()


@needs_room
def test_a_replica_under_a_low_soft_limit_serves_more_connections_than_it() -> None:
    with start_runtime(
        SCRIPTS / "echo_text.py", preexec_fn=with_soft_open_files_limit(LOW_SOFT_LIMIT)
    ) as runtime:
        assert soft_open_files_limit(runtime.process.pid) == expected_raised_limit()
        assert runtime.port is not None
        statuses = asyncio.run(health_over_connections(runtime.port, CONNECTIONS))
    assert statuses == [b"HTTP/1.1 200 OK\r\n"] * CONNECTIONS


@needs_room
@pytest.mark.parametrize(
    ("ceiling", "expected"),
    [(OPEN_FILES_CEILING, None), (LOW_SOFT_LIMIT // 2, LOW_SOFT_LIMIT)],
    ids=["raised-to-the-hard-limit", "never-lowered-by-the-ceiling"],
)
def test_raise_open_files_limit_reports_before_and_after(
    ceiling: int, expected: int | None
) -> None:
    code = (
        "from scoring_runtime.listen import raise_open_files_limit\n"
        f"print(*raise_open_files_limit({ceiling}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=with_soft_open_files_limit(LOW_SOFT_LIMIT),
    )
    before, after = (int(x) for x in result.stdout.split())
    assert before == LOW_SOFT_LIMIT
    assert after == (expected_raised_limit() if expected is None else expected)
