"""Set up a virtual environment for mlfe and run it or its test suite.

    python3 dev.py run     # install, train the example model, serve the example deployment
    python3 dev.py test    # install, then ruff, mypy and pytest

Needs nothing but Python 3.10+. The environment lives in .venv and is reinstalled
only when pyproject.toml or setup.py changes; the modules setup.py compiles are rebuilt
when their source is newer than the build.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".mlfe-installed"
PIP = (str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q")
COMPILED_PACKAGES = ("router", "scoring_runtime")  # where setup.py's modules live


def compiled_files() -> list[Path]:
    """The modules setup.py compiled, as the editable install put them next to their source."""
    return [built for package in COMPILED_PACKAGES for built in (ROOT / package).glob("*.so")]


def stale_compiled_modules() -> list[str]:
    """Modules whose mypyc build (setup.py) is older than their source.

    An editable install puts the compiled module next to its source, and Python imports
    the compiled one first: after an edit it must be rebuilt or the edit is not seen."""
    stale = []
    for built in compiled_files():
        source = built.with_name(built.name.split(".", 1)[0] + ".py")
        if not source.exists() or source.stat().st_mtime > built.stat().st_mtime:
            stale.append(f"{built.parent.name}.{source.stem}")
    return stale


def remove_compiled_modules() -> None:
    """Before a build: a module setup.py no longer compiles must not stay shadowed."""
    for built in compiled_files():
        built.unlink()
    for shared in ROOT.glob("*__mypyc*.so"):  # the library the compiled modules share
        shared.unlink()


def ensure_environment() -> None:
    """Create .venv and install mlfe with its dev extras unless already current; rebuild
    the compiled modules if their source changed since."""
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "setup.py").read_bytes()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        if stale := stale_compiled_modules():
            print(f"rebuilding compiled modules: {', '.join(stale)}", flush=True)
            remove_compiled_modules()
            subprocess.run([*PIP, "--no-deps", "-e", str(ROOT)], check=True)
        return
    if not PYTHON.exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing mlfe and its dependencies into .venv", flush=True)
    remove_compiled_modules()
    subprocess.run([*PIP, "--upgrade", "pip"], check=True)
    subprocess.run([*PIP, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def run(*argv: str) -> int:
    print("+", " ".join(argv), flush=True)
    child = subprocess.Popen(argv, cwd=ROOT)
    # A Ctrl-C in the terminal reaches the child as well (one process group), and the
    # child decides how to stop (mlfe drains its replicas first): wait for it rather than
    # kill it and die with a traceback. A SIGTERM sent to this script alone is passed on.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum)),
    }
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_test(extra: list[str]) -> int:
    for step in (
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(PYTHON), "-m", "mypy"],
    ):
        if code := run(*step):
            return code
    # pytest exits 5 when it collected nothing; that is a failure here too.
    return run(str(PYTHON), "-m", "pytest", *extra)


def cmd_run(extra: list[str]) -> int:
    return run(str(PYTHON), str(ROOT / "examples" / "run_example.py"), *extra)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    command, extra = sys.argv[1], sys.argv[2:]
    return cmd_test(extra) if command == "test" else cmd_run(extra)


if __name__ == "__main__":
    sys.exit(main())
