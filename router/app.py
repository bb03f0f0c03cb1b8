"""Assembles the router's ASGI application: the data plane in front of a Starlette app
for everything that is not scoring (health, readiness, metrics; management later)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router.dataplane import DEFAULT_MAX_BODY, DataPlane
from router.registry import Registry

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(
    registry: Registry,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    random_source: Callable[[], float] = random.random,
    extra_routes: Sequence[BaseRoute] = (),
) -> DataPlane:
    """The router app for `registry`; its metrics include the registry's pool gauges.

    `extra_routes` join the site behind the data plane (the management API's mount)."""
    registry.metrics.watch_pools(registry.pool_samples)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        return JSONResponse({"status": "ready", "services": registry.describe()})

    async def metrics(request: Request) -> Response:
        return Response(registry.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"message": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"message": "Internal server error"}, status_code=500)

    site = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *extra_routes,
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    return DataPlane(registry, site, max_body=max_body, random_source=random_source)
