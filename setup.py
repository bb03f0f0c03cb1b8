"""Compile mlfe's scoring path with mypyc when this machine can build C extensions.

Everything else about the package is in pyproject.toml. The modules below run once or
more for every scored request; compiled, the router spends less CPU per request
(benchmarks/router_overhead.py measures both builds side by side). They are the same
typed Python source either way: without a C compiler and Python's headers, when the C
build fails, or with MLFE_PURE_PYTHON=1, mlfe installs as plain Python and behaves the
same, only slower.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HOT_PATH = (
    "scoring_runtime/alarm.py",
    "scoring_runtime/http_protocol.py",
    "scoring_runtime/request_ids.py",
    "scoring_runtime/tally.py",
    "router/auth.py",
    "router/dataplane.py",
    "router/dispatch.py",
    "router/metrics.py",
    "router/registry.py",
    "router/traffic.py",
    "router/upstream.py",
)


def can_compile() -> str | None:
    """Why the hot path stays plain Python here, or None when it can be compiled."""
    if os.environ.get("MLFE_PURE_PYTHON"):
        return "MLFE_PURE_PYTHON is set"
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1]
    if not compiler or shutil.which(compiler[0]) is None:
        return f"no C compiler ({' '.join(compiler) or 'cc'}) on PATH"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "Python's C headers are not installed"
    return None


def plain_python(reason: str) -> None:
    print(f"mlfe: installing the scoring path as plain Python: {reason}", file=sys.stderr)


def ext_modules() -> list[object]:
    reason = can_compile()
    if reason is not None:
        plain_python(reason)
        return []
    from mypyc.build import mypycify

    return list(mypycify(list(HOT_PATH), opt_level="3"))


class BuildOrStayPlain(build_ext):
    """A compiler that is present but fails (too old, a missing system header) leaves mlfe
    plain Python, as a missing compiler does, rather than failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:
            # mypyc builds its shared library first; whatever did get built is unusable
            # without the rest, and nothing was copied into place yet.
            for extension in self.extensions:
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            self.extensions = []
            plain_python(f"the C build failed ({exc})")


if __name__ == "__main__":  # as pip's build backend runs it; tests import it
    setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildOrStayPlain})
