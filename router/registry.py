"""The in-memory registry of services, versions and replicas the data plane routes by.

Writers (the control plane, the replica backends, tests) change it through a small
interface; every change publishes a new immutable `ServiceRoute` into a fresh mapping, so
the data plane reads one attribute per request and never waits on a writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from router.auth import Authenticator, KeyAuth, NoAuth, TokenAuth
from router.dispatch import ReplicaPool
from router.metrics import PoolSample, RouterMetrics, VersionMetrics
from router.traffic import TrafficSplit
from router.upstream import UpstreamPool

AuthMode = Literal["key", "token", "none"]


@dataclass(frozen=True)
class VersionSpec:
    """What the data plane needs to know about one version (one deployment)."""

    name: str
    traffic_percentile: float = 0.0
    scoring_timeout: float = 60.0
    slots_per_replica: int = 1
    max_queue_wait: float = 0.5
    max_queue_length: int = 1024


@dataclass(frozen=True)
class ServiceSpec:
    """A service as the data plane sees it: credentials, versions and the traffic split."""

    name: str
    versions: tuple[VersionSpec, ...]
    default_version: str
    auth_mode: AuthMode = "key"
    primary_key: str = ""
    secondary_key: str = ""
    token_secret: bytes = b""

    def authenticator(self) -> Authenticator:
        if self.auth_mode == "key":
            return KeyAuth(self.primary_key, self.secondary_key)
        if self.auth_mode == "token":
            return TokenAuth(self.token_secret, audience=self.name)
        return NoAuth()


@dataclass(eq=False)
class Deployment:
    """The live side of one version: its replica pool and resolved metric children.

    It outlives `ServiceRoute` snapshots, so replicas and queued requests survive a change
    of keys or traffic.
    """

    service: str
    spec: VersionSpec
    pool: ReplicaPool[UpstreamPool]
    metrics: VersionMetrics

    @property
    def version(self) -> str:
        return self.spec.name


@dataclass(frozen=True, eq=False)
class ServiceRoute:
    """An immutable snapshot of one service, read by the data plane per request."""

    name: str
    auth: Authenticator
    traffic: TrafficSplit
    deployments: Mapping[str, Deployment]
    # Rewritten swagger documents by requested version; dropped with the snapshot.
    swagger_cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def default(self) -> Deployment:
        return self.deployments[self.traffic.default]


class UnknownReplicaTarget(LookupError):
    """A replica operation named a service or version the registry does not hold."""


class Registry:
    """Services, versions and replica addresses, published as immutable snapshots."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        # Told (service, version, replica_id) when a request outlived the scoring timeout on
        # a replica, so its backend can recycle it; the data plane cannot see why it hangs.
        self.on_replica_timeout: Callable[[str, str, str], None] | None = None
        # The current snapshot, a read-only mapping of service name to route, replaced
        # whole by every change; an attribute rather than a property because the data
        # plane reads it on every request.
        self.routes: Mapping[str, ServiceRoute] = MappingProxyType({})
        self._deployments: dict[tuple[str, str], Deployment] = {}

    def set_service(self, spec: ServiceSpec) -> ServiceRoute:
        """Create or replace a service; versions that stay keep their replicas."""
        percentiles = {v.name: v.traffic_percentile for v in spec.versions}
        traffic = TrafficSplit.from_percentiles(percentiles, spec.default_version)
        deployments: dict[str, Deployment] = {}
        for version in spec.versions:
            deployments[version.name] = self._deployment(spec.name, version)
        for key in [k for k in self._deployments if k[0] == spec.name]:
            if key[1] not in deployments:
                self._retire(self._deployments.pop(key))
        route = ServiceRoute(
            name=spec.name,
            auth=spec.authenticator(),
            traffic=traffic,
            deployments=MappingProxyType(deployments),
        )
        self._publish(spec.name, route)
        return route

    def remove_service(self, name: str) -> None:
        for key in [k for k in self._deployments if k[0] == name]:
            self._retire(self._deployments.pop(key))
        self._publish(name, None)

    def deployment(self, service: str, version: str) -> Deployment:
        try:
            return self._deployments[(service, version)]
        except KeyError:
            raise UnknownReplicaTarget(f"no version {version!r} of service {service!r}") from None

    def add_replica(self, service: str, version: str, replica_id: str, address: str) -> None:
        """Put a ready replica into rotation; queued requests may start on it at once."""
        deployment = self.deployment(service, version)
        deployment.pool.add(replica_id, UpstreamPool(address))

    def drain_replica(self, service: str, version: str, replica_id: str) -> asyncio.Future[None]:
        """Stop sending new work to a replica; the future resolves when its requests finish."""
        return self.deployment(service, version).pool.drain(replica_id)

    def remove_replica(self, service: str, version: str, replica_id: str) -> None:
        """Forget a replica now; requests still running on it finish or fail on their own."""
        deployment = self.deployment(service, version)
        replica = deployment.pool.get(replica_id)
        deployment.pool.remove(replica_id)
        if replica is not None:
            _close_soon(replica.target)

    def _deployment(self, service: str, spec: VersionSpec) -> Deployment:
        existing = self._deployments.get((service, spec.name))
        if existing is not None and existing.spec.slots_per_replica == spec.slots_per_replica:
            existing.spec = spec
            existing.pool.max_queue_wait = spec.max_queue_wait
            return existing
        if existing is not None:
            # Slots per replica changed: replicas must restart with the new count anyway,
            # so the backend re-adds them to the new pool.
            self._retire(existing)
        deployment = Deployment(
            service=service,
            spec=spec,
            pool=ReplicaPool(
                slots_per_replica=spec.slots_per_replica,
                max_queue_wait=spec.max_queue_wait,
                max_queue_length=spec.max_queue_length,
            ),
            metrics=self.metrics.version(service, spec.name),
        )
        self._deployments[(service, spec.name)] = deployment
        return deployment

    def _retire(self, deployment: Deployment) -> None:
        for replica in list(deployment.pool.replicas):
            deployment.pool.remove(replica.id)
            _close_soon(replica.target)

    def _publish(self, name: str, route: ServiceRoute | None) -> None:
        routes = dict(self.routes)
        if route is None:
            routes.pop(name, None)
        else:
            routes[name] = route
        self.routes = MappingProxyType(routes)

    def pool_samples(self) -> Iterator[PoolSample]:
        """Per deployment: in flight, waiting and replicas by state, for the metrics."""
        for (service, version), d in self._deployments.items():
            pool = d.pool
            states = {
                "ready": pool.ready_replicas,
                "draining": len(pool.replicas) - pool.ready_replicas,
            }
            yield service, version, pool.in_flight, pool.waiting, states

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for /readyz and debugging."""
        return {
            name: {
                version: {
                    "ready": d.pool.ready_replicas,
                    "in_flight": d.pool.in_flight,
                    "waiting": d.pool.waiting,
                }
                for version, d in route.deployments.items()
            }
            for name, route in self.routes.items()
        }


def _close_soon(upstream: UpstreamPool) -> None:
    """Close a replica's connections without making the caller await it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(upstream.close())
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()
