"""Runs an ASGI app on uvicorn with the settings the scoring path needs."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from scoring_runtime.http_protocol import HttpProtocol

# Clients of a scoring service keep connections open between bursts of load.
KEEP_ALIVE_SECONDS = 75


def uvicorn_server(app: Any, *, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server on httptools, one write per response, no access log: the hot
    path logs nothing."""
    config = uvicorn.Config(
        app,
        loop="none",  # the caller's loop (uvloop when run through `run`)
        http=HttpProtocol,
        lifespan="off",
        access_log=False,
        # Nothing in mlfe reads the client address, so skip X-Forwarded-For parsing.
        proxy_headers=False,
        log_level=log_level,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it from getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock
