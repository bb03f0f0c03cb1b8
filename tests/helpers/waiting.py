"""Waiting, in async tests, for what the event loop or another process makes true soon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition"
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds.

    The timeout only bounds a failing test: a passing one waits as long as it takes.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        await asyncio.sleep(0.05)
