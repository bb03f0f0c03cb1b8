"""Set up a virtual environment for mlfe and run it or its test suite.

    python3 dev.py run     # install, train the example model, serve the example deployment
    python3 dev.py test    # install, then ruff, mypy and pytest

Needs nothing but Python 3.10+. The environment lives in .venv and is reinstalled
only when pyproject.toml changes.
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


def ensure_environment() -> None:
    """Create .venv and install mlfe with its dev extras unless already current."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("installing mlfe and its dependencies into .venv", flush=True)
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
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
