"""Runs an ASGI app on uvicorn with the settings the scoring path needs."""

from __future__ import annotations

from typing import Any

import uvicorn

from scoring_runtime.http_protocol import HttpProtocol
from scoring_runtime.listen import KEEP_ALIVE_S


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
        timeout_keep_alive=KEEP_ALIVE_S,
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)
