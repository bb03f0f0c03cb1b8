"""Bind the listening socket and serve the app on it with uvicorn.

The runtime binds the socket itself, after init() succeeded, so that an accepted
connection always means a ready replica, `--port 0` can report the port it got, and a
stale Unix socket file from a killed replica is replaced.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from scoring_runtime.http_protocol import HttpProtocol

# Longer than any client pool's idle timeout, so the server is never the side that
# closes a connection a client is about to reuse.
KEEP_ALIVE_S = 75
BACKLOG = 2048


# Enough for any load test; an unlimited hard limit is not taken at its word.
OPEN_FILES_CEILING = 1 << 20


def raise_open_files_limit(ceiling: int = OPEN_FILES_CEILING) -> tuple[int, int]:
    """Lift this process's soft limit on open files to its hard limit (at most `ceiling`);
    returns the soft limit (before, after).

    Every client connection is a file. The usual default soft limit is 1,024 while the hard
    limit is far higher, so a load test's thousandth connection would be refused for no
    reason the user chose; servers that expect many clients raise it themselves, as nginx
    does with `worker_rlimit_nofile`. A limit that cannot be raised is left as it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def bind_unix(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # left behind by a replica that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _pick(preferred: str, module: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return preferred


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_ready()


class _StopRequested(Exception):
    pass


def _request_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested


def serve(
    app: Any, sock: socket.socket, on_ready: Callable[[], None], graceful_timeout_s: float
) -> None:
    """Serve until SIGINT/SIGTERM, then return normally so the caller can clean up.

    uvicorn shuts down gracefully on those signals and then re-raises the signal to the
    previous handler; with the default handler that would kill the process before any
    `finally` runs, so a handler that just unwinds is installed for the duration.
    In-flight requests get `graceful_timeout_s` to finish.
    """
    config = uvicorn.Config(
        app,
        loop=_pick("uvloop", "uvloop", "asyncio"),
        http=HttpProtocol,
        ws="none",
        lifespan="off",
        access_log=False,
        # The runtime never reads the client address: skip X-Forwarded-For parsing.
        proxy_headers=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),
    )
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _Server(config, on_ready).run(sockets=[sock])
    except _StopRequested:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
