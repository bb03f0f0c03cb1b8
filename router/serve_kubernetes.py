"""`mlfe serve --backend kubernetes`: what a router pod adds to `mlfe serve`.

State lives in the cluster (`KubernetesStore`: a ConfigMap and a Secret per service),
replicas are Deployments (`KubernetesBackend`), and the router pods elect one of them
through the Lease `mlfe-autoscaler` to run the autoscaler. Every pod serves traffic and
the management API, reports its own demand on /internal/demand, and follows the changes
the other pods make through a watch on the store. The leader's control loop reads the
sum of every pod's demand (`ClusterDemandSource`); the others read, and act on nothing.

Imported only for this backend: the `kubernetes` client takes a while to load.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from kubernetes.config.config_exception import ConfigException
from starlette.routing import BaseRoute

from autoscaler.backends.base import DeploymentKey
from autoscaler.backends.kube_api import connect
from autoscaler.backends.kube_manifests import MODELS_MOUNT, ModelsVolume, PodOptions
from autoscaler.backends.kubernetes import KubernetesBackend
from autoscaler.backends.mixed import SharedMixedBackend
from autoscaler.backends.static import StaticBackend
from autoscaler.leader import LeaderElector
from autoscaler.loop import ControlLoop
from router.demand import ClusterDemandSource, DemandMeters, demand_route
from router.kube_store import KubernetesStore, ServiceWatch
from router.registry import Registry
from router.replicas import RegistryReplicaSink
from router.serve_settings import KubernetesSettings, ServeError
from router.services import ServiceManager
from router.store import StoreError

logger = logging.getLogger("mlfe.serve")

LEASE_NAME = "mlfe-autoscaler"
# How often the leader asks every router pod for its demand, and how long it waits.
DEMAND_PERIOD = 1.0
DEMAND_TIMEOUT = 0.5
# Watches open this long before the API server ends them and they start anew.
WATCH_TIMEOUT = 300


def models_volume(settings: KubernetesSettings) -> ModelsVolume | None:
    """The volume replicas mount model files from, as this router sees it."""
    if settings.models_claim:
        return ModelsVolume.claim(settings.models_claim, settings.models_dir or MODELS_MOUNT)
    if settings.models_dir:
        return ModelsVolume.host(settings.models_dir)
    return None


class ClusterRouter:
    """One router pod's part in the cluster, from start to a graceful shutdown."""

    def __init__(self, settings: KubernetesSettings, registry: Registry, admin_key: str) -> None:
        try:
            self.api_client, self.namespace = connect(settings.kubeconfig, settings.namespace)
        except (ConfigException, OSError, ValueError) as error:
            where = settings.kubeconfig or "the pod's service account or ~/.kube/config"
            raise ServeError(
                f"cannot load a Kubernetes configuration from {where}: {error}"
            ) from None
        self.identity = settings.identity or socket.gethostname()
        self._manager: ServiceManager | None = None
        self.store = KubernetesStore(self.api_client, self.namespace)
        sink = RegistryReplicaSink(registry)
        deployments = KubernetesBackend(
            self.api_client,
            self.namespace,
            sink,
            image=settings.runtime_image,
            models_volume=models_volume(settings),
            pod_options=self._pod_options,
            watch_timeout=WATCH_TIMEOUT,
        )
        # Versions listing replica urls are probed by every router pod itself.
        self.backend = SharedMixedBackend(deployments, StaticBackend(sink))
        self.elector = LeaderElector(
            self.api_client,
            self.namespace,
            LEASE_NAME,
            self.identity,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
        )
        self.meters = DemandMeters(registry)
        self.demand = ClusterDemandSource(
            self.api_client,
            self.namespace,
            identity=self.identity,
            port=None,  # the router Service's EndpointSlices name the pods' port
            admin_key=admin_key,
            period=DEMAND_PERIOD,
            timeout=DEMAND_TIMEOUT,
            should_poll=self.is_leader,
        )
        self.control_loop = ControlLoop(self.backend, self.demand, should_act=self.is_leader)
        # The leader presents the admin key every router pod shares.
        self.routes: tuple[BaseRoute, ...] = (demand_route(self.meters, admin_key=admin_key),)
        self.watch: ServiceWatch | None = None

    def is_leader(self) -> bool:
        return self.elector.is_leader

    async def start(self, manager: ServiceManager) -> None:
        """Connect everything, before `manager.restore()`: the store watch starts first,
        so no change another router makes while this one restores goes unnoticed."""
        self._manager = manager
        try:
            # A cheap first call: an unreachable or forbidding API server fails here, clearly.
            await asyncio.to_thread(self.store.signing_secret)
        except StoreError as error:
            raise ServeError(f"{error} (namespace {self.namespace})") from None
        self.watch = ServiceWatch(
            self.api_client,
            self.namespace,
            manager.service_changed_elsewhere,
            watch_timeout=WATCH_TIMEOUT,
        )
        await self.watch.start()
        await self.backend.start()
        await self.elector.start()
        await self.demand.start()
        logger.info(
            "event=cluster-joined namespace=%s identity=%s lease=%s",
            self.namespace,
            self.identity,
            LEASE_NAME,
        )

    async def close(self) -> None:
        """Hand the Lease over and stop watching; the replicas keep running."""
        if self.watch is not None:
            await self.watch.stop()
        await self.demand.close()
        await self.elector.close(release=True)

    def disconnect(self) -> None:
        """Close the API client (after the backend stopped its watches)."""
        self.api_client.close()

    def _pod_options(self, key: DeploymentKey) -> PodOptions:
        return self._manager.pod_options(key) if self._manager is not None else PodOptions()
