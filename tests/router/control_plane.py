"""Serving a control plane a test assembled itself, and taking it down in the right order.

Tests that build a ServiceManager by hand (to pick its backend, clock or intervals) all
end the same way: the router must be stopped before the manager closes, and the manager
before the loop, backend and store it drives, or replicas outlive the test.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp

from autoscaler.backends.base import ReplicaBackend
from autoscaler.loop import ControlLoop
from router.server import uvicorn_server
from router.services import ServiceManager
from router.store import Store


@asynccontextmanager
async def serving(
    app: ASGIApp,
    sock: socket.socket,
    manager: ServiceManager,
    loop: ControlLoop,
    backend: ReplicaBackend,
    store: Store,
) -> AsyncIterator[None]:
    """Restore `manager` and serve `app` on `sock` for the block; then stop the server and
    close the manager, `loop`, `backend` and `store`, whatever the block raised."""
    server = uvicorn_server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await manager.restore()
        while not server.started:
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task
        await manager.close()
        await loop.close()
        await backend.close()
        store.close()
