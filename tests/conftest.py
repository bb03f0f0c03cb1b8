"""Fixtures every test folder may use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state folder with a short path: replica sockets live under it, and Unix
    socket paths must stay below 107 bytes (pytest's tmp_path is often too long)."""
    path = Path(tempfile.mkdtemp(prefix="mlfe"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
