"""Fixtures for the scoring runtime's end-to-end tests: real processes, real sockets.

Each test module starts the runtimes it needs once (module scope) with `runtime_for`,
so a folder of tests costs a handful of process starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.runtime_proc import RuntimeProcess, start_runtime

SCRIPTS = Path(__file__).parent / "scripts"

StartRuntime = Callable[..., RuntimeProcess]


@pytest.fixture(scope="module")
def runtime_for() -> Iterator[StartRuntime]:
    """Start a runtime for a script in scripts/ (or any path); all are stopped at module end.

    `runtime_for("echo_text.py", args=[...], uds=True, env={...})`.
    """
    with ExitStack() as stack:

        def start(script: str | Path, **options: Any) -> RuntimeProcess:
            path = Path(script)
            if not path.is_absolute():
                path = SCRIPTS / path
            return stack.enter_context(start_runtime(path, **options))

        yield start
