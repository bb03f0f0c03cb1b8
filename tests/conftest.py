"""Fixtures every test folder may use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev import stale_compiled_modules


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test old code: Python imports a compiled module before its source."""
    if stale := stale_compiled_modules():
        raise pytest.UsageError(
            f"compiled modules are older than their source ({', '.join(stale)}); "
            "`python3 dev.py test` rebuilds them"
        )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state folder with a short path: replica sockets live under it, and Unix
    socket paths must stay below 107 bytes (pytest's tmp_path is often too long)."""
    path = Path(tempfile.mkdtemp(prefix="mlfe"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
