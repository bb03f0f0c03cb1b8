"""setup.py: the scoring path is compiled with mypyc where this machine can build C
extensions, and mlfe installed as plain Python (no compiler, or MLFE_PURE_PYTHON=1)
serves the same. The rest of the suite runs on whichever build is installed."""

from __future__ import annotations

import importlib
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP: dict[str, Any] = runpy.run_path(str(ROOT / "setup.py"), run_name="mlfe_setup")
HOT_PATH: tuple[str, ...] = SETUP["HOT_PATH"]


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def test_the_scoring_path_is_compiled_where_it_can_be() -> None:
    """Catches a build that silently fell back to plain Python on a machine that can
    compile (a compiler error, a module missing from the build)."""
    reason = SETUP["can_compile"]()
    if reason is not None:
        pytest.skip(f"installed as plain Python here: {reason}")
    for path in HOT_PATH:
        module = importlib.import_module(module_name(path))
        assert module.__file__ is not None and module.__file__.endswith(".so"), path


def test_asked_to_or_without_a_compiler_mlfe_installs_as_plain_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFE_PURE_PYTHON", "1")
    assert SETUP["can_compile"]() == "MLFE_PURE_PYTHON is set"
    assert SETUP["ext_modules"]() == []
    monkeypatch.delenv("MLFE_PURE_PYTHON")
    monkeypatch.setenv("PATH", "")
    assert "no C compiler" in SETUP["can_compile"]()
    assert SETUP["ext_modules"]() == []


@pytest.fixture(scope="module")
def plain_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's packages, tests and build files without any compiled module."""
    tree = tmp_path_factory.mktemp("plain")
    for package in ("router", "scoring_runtime", "autoscaler", "tests"):
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
        )
    for name in ("dev.py", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    return tree


def test_a_compiler_that_fails_leaves_a_plain_python_build(plain_tree: Path) -> None:
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("Python's C headers are not installed: setup.py would not try to compile")
    out = plain_tree / "build-out"
    env = {**os.environ, "CC": "/bin/false"}  # found on PATH, fails every compile
    argv = ("setup.py", "-q", "build_ext", "--build-lib", out, "--build-temp", out / "tmp")
    built = subprocess.run(
        [sys.executable, *map(str, argv)],
        cwd=plain_tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "installing the scoring path as plain Python: the C build failed" in built.stderr
    assert not list(out.rglob("*.so"))
    shutil.rmtree(out)


def run_plain(tree: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_plain_python_scoring_path_passes_its_tests(plain_tree: Path) -> None:
    """The data plane, dispatch, upstream pool and HTTP protocol suites, on plain Python:
    what mlfe runs where nothing could be compiled."""
    imported = run_plain(
        plain_tree,
        "-c",
        "import importlib, sys; "
        "print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))",
        *(module_name(path) for path in HOT_PATH),
    )
    assert imported.returncode == 0, imported.stderr
    files = imported.stdout.split()
    assert len(files) == len(HOT_PATH)
    assert all(file.startswith(str(plain_tree)) and file.endswith(".py") for file in files)

    suites = [
        "tests/router/test_dataplane.py",
        "tests/router/test_dispatch.py",
        "tests/router/test_upstream.py",
        "tests/scoring_runtime/test_http_protocol.py",
        "tests/scoring_runtime/test_http_server_conformance.py",
    ]
    result = run_plain(plain_tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
