"""Replica backends tell the registry which replicas may take traffic.

The autoscaler cannot import the router, so its backends speak to a `ReplicaSink` and
read demand from a `DemandSource`; this adapter implements both over the `Registry`.
A service or version deleted while a backend still reports on its replicas is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from autoscaler.backends.base import DeploymentKey
from router.registry import Registry, UnknownReplicaTarget

logger = logging.getLogger("mlfe.router.replicas")


class RegistryReplicaSink:
    """`ReplicaSink` and `DemandSource` for the autoscaler, backed by the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def replica_ready(self, key: DeploymentKey, replica_id: str, address: str) -> None:
        try:
            self.registry.add_replica(key.service, key.version, replica_id, address)
        except UnknownReplicaTarget:
            logger.info("event=replica-ignored deployment=%s replica=%s", key, replica_id)

    def replica_draining(self, key: DeploymentKey, replica_id: str) -> Awaitable[None]:
        try:
            return self.registry.drain_replica(key.service, key.version, replica_id)
        except UnknownReplicaTarget:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    def replica_removed(self, key: DeploymentKey, replica_id: str) -> None:
        with contextlib.suppress(UnknownReplicaTarget):
            self.registry.remove_replica(key.service, key.version, replica_id)

    def read_demand(self, key: DeploymentKey) -> float:
        try:
            deployment = self.registry.deployment(key.service, key.version)
        except UnknownReplicaTarget:
            return 0.0
        return deployment.pool.read_demand()
