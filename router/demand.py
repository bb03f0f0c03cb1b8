"""Demand across router pods: each pod reports its own, the leader adds them up.

On Kubernetes every router pod takes traffic, so a deployment's demand (requests in
flight plus waiting, time-averaged) is spread over all of them, and the one pod that
runs the autoscaler must see the sum. Each pod serves `GET /internal/demand` (JSON
{"service/version": demand}); the leader's `ClusterDemandSource` finds the router pods
through the router Service's EndpointSlices, asks each of them every period, and hands
the sums to its control loop as an ordinary `DemandSource`.

Each reader (the leader names itself in `?reader=`) averages over its own window, from
the pools' cumulative demand (`ReplicaPool.demand_area()`), which reading never changes:
a new leader, or a curious operator with curl, never disturbs what the current leader
measures, nor what this router's own control loop reads.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from kubernetes import client
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from autoscaler.backends.base import DeploymentKey
from autoscaler.backends.kube_api import ApiPermission
from autoscaler.backends.kube_manifests import LABEL_SERVICE_NAME
from autoscaler.backends.kube_watch import Informer, slice_endpoints
from router.dispatch import ReplicaPool
from router.registry import Registry

logger = logging.getLogger("mlfe.router.demand")

RBAC_RULES: tuple[ApiPermission, ...] = (
    ApiPermission("discovery.k8s.io", "endpointslices", ("list", "watch")),
)

DEMAND_PATH = "/internal/demand"
ROUTER_SERVICE = "mlfe-router"
ROUTER_PORT = 8080
MAX_READER_NAME = 128

Key = tuple[str, str]  # (service, version)


@dataclass(eq=False)
class _Reader:
    """What one reader saw at its previous read of each pool: (pool, area, time)."""

    last_read: float
    seen: dict[Key, tuple[ReplicaPool[Any], float, float]] = field(default_factory=dict)


class DemandMeters:
    """Time-averaged demand per deployment, with a separate window for every reader.

    A reader's first read of a deployment (or of a pool that replaced its previous one)
    gives the demand at that instant; later reads give the average since its previous one.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_readers: int = 16,
        idle_after: float = 300.0,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self.max_readers = max_readers
        self.idle_after = idle_after
        self._readers: dict[str, _Reader] = {}

    def read(self, reader: str) -> dict[Key, float]:
        """Every deployment's average demand since `reader` last read it."""
        state = self._reader(reader)
        pools = self._pools()
        averages = {key: _average(state, key, pool) for key, pool in pools.items()}
        # A deployment that is gone is forgotten: a new one of that name starts afresh.
        state.seen = {key: seen for key, seen in state.seen.items() if key in pools}
        return averages

    def read_one(self, reader: str, key: Key) -> float:
        """One deployment's average demand since `reader` last read that deployment."""
        state = self._reader(reader)
        pool = self._pools().get(key)
        return 0.0 if pool is None else _average(state, key, pool)

    def source(self, reader: str) -> MeterDemandSource:
        """A `DemandSource` over this router's pools alone, for a control loop."""
        return MeterDemandSource(self, reader)

    def _pools(self) -> dict[Key, ReplicaPool[Any]]:
        return {
            (route.name, version): deployment.pool
            for route in self.registry.routes.values()
            for version, deployment in route.deployments.items()
        }

    def _reader(self, name: str) -> _Reader:
        now = self._clock()
        state = self._readers.get(name)
        if state is None:
            for stale in [
                n for n, r in self._readers.items() if now - r.last_read > self.idle_after
            ]:
                del self._readers[stale]
            while len(self._readers) >= self.max_readers:
                oldest = min(self._readers, key=lambda n: self._readers[n].last_read)
                del self._readers[oldest]
            state = self._readers[name] = _Reader(now)
        state.last_read = now
        return state


def _average(state: _Reader, key: Key, pool: ReplicaPool[Any]) -> float:
    area, now = pool.demand_area()
    previous = state.seen.get(key)
    state.seen[key] = (pool, area, now)
    if previous is None or previous[0] is not pool or now <= previous[2]:
        return float(pool.demand)
    return (area - previous[1]) / (now - previous[2])


@dataclass(frozen=True)
class MeterDemandSource:
    """`DemandSource` reading one router's pools through its own meter window."""

    meters: DemandMeters
    reader: str

    def read_demand(self, key: DeploymentKey) -> float:
        return self.meters.read_one(self.reader, (key.service, key.version))


def demand_route(meters: DemandMeters, *, admin_key: str | None = None) -> Route:
    """`GET /internal/demand?reader=NAME` -> {"service/version": demand}.

    With `admin_key`, callers must send it as a bearer token (the router pods share it).
    """
    expected = f"Bearer {admin_key}".encode() if admin_key is not None else None

    async def endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {"message": "this endpoint needs the admin key as a bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        reader = request.query_params.get("reader", "anonymous")
        if not reader or len(reader) > MAX_READER_NAME or not reader.isprintable():
            return JSONResponse(
                {"message": f"reader must be 1 to {MAX_READER_NAME} printable characters"},
                status_code=400,
            )
        demand = meters.read(reader)
        body = {f"{service}/{version}": value for (service, version), value in demand.items()}
        return Response(orjson.dumps(body), media_type="application/json")

    return Route(DEMAND_PATH, endpoint, methods=["GET"])


class ClusterDemandSource:
    """`DemandSource` for the leader: the sum of every router pod's demand.

    A background task asks every serving router pod each `period` (only while
    `should_poll()`, i.e. while leading); `read_demand()` answers from the last round.
    A pod that does not answer within `timeout` counts 0 and is logged once, until it
    answers again.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        identity: str,
        service_name: str = ROUTER_SERVICE,
        port: int | None = ROUTER_PORT,
        admin_key: str | None = None,
        period: float = 1.0,
        timeout: float = 0.5,
        should_poll: Callable[[], bool] = lambda: True,
    ) -> None:
        self.identity = identity
        self.port = port  # None: the port the router Service's EndpointSlice lists
        self.period = period
        self.timeout = timeout
        self.should_poll = should_poll
        self._headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
        self.routers = Informer(
            client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice,
            namespace,
            label_selector=f"{LABEL_SERVICE_NAME}={service_name}",
            name=f"endpointslices {service_name}",
        )
        self._totals: dict[DeploymentKey, float] = {}
        self._silent: set[str] = set()  # pods whose failure was logged
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    def read_demand(self, key: DeploymentKey) -> float:
        return self._totals.get(key, 0.0)

    @property
    def totals(self) -> dict[DeploymentKey, float]:
        return dict(self._totals)

    async def start(self) -> None:
        if self._task is not None:
            return
        self.routers.start()
        await self.routers.synced()
        self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
        self._task = asyncio.create_task(self._run(), name="cluster demand")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        await self.routers.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def router_addresses(self) -> dict[str, str]:
        """Serving router pods by name: "ip:port"."""
        found: dict[str, str] = {}
        for endpoint_slice in self.routers.objects.values():
            for endpoint in slice_endpoints(endpoint_slice, port_name=None):
                if endpoint.serving:
                    address = endpoint.address
                    if self.port is not None:
                        address = f"{address.rsplit(':', 1)[0]}:{self.port}"
                    found.setdefault(endpoint.pod, address)
        return found

    async def poll(self) -> dict[DeploymentKey, float]:
        """Ask every router pod once and replace the totals with the sums."""
        assert self._client is not None, "start() the demand source first"
        pods = self.router_addresses()
        answers = await asyncio.gather(*(self._ask(p, a) for p, a in pods.items()))
        totals: dict[DeploymentKey, float] = {}
        for answer in answers:
            for key, value in answer.items():
                totals[key] = totals.get(key, 0.0) + value
        self._totals = totals
        return totals

    async def _run(self) -> None:
        while True:
            try:
                if self.should_poll():
                    await self.poll()
                if not self.should_poll():
                    self._totals = {}  # a follower's numbers would be stale by the time it leads
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event=demand-poll-error")
            await asyncio.sleep(self.period)

    async def _ask(self, pod: str, address: str) -> dict[DeploymentKey, float]:
        assert self._client is not None
        url = f"http://{address}{DEMAND_PATH}"
        try:
            response = await self._client.get(url, params={"reader": self.identity})
            response.raise_for_status()
            body = orjson.loads(response.content)
            demand = {_key(name): float(value) for name, value in body.items()}
        except (
            httpx.HTTPError,
            orjson.JSONDecodeError,
            AttributeError,
            TypeError,
            ValueError,
        ) as error:
            if pod not in self._silent:
                self._silent.add(pod)
                logger.warning(
                    "event=demand-unanswered pod=%s address=%s error=%r",
                    pod,
                    address,
                    f"{type(error).__name__}: {error}".rstrip(": "),
                )
            return {}
        if pod in self._silent:
            self._silent.discard(pod)
            logger.info("event=demand-answered pod=%s address=%s", pod, address)
        return demand


def _key(name: str) -> DeploymentKey:
    service, slash, version = name.partition("/")
    if not slash or not service or not version:
        raise ValueError(f"{name!r} is not service/version")
    return DeploymentKey(service, version)
