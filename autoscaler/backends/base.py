"""What every replica backend offers, and what it needs from the router.

The autoscaler must not import the router (the router imports the autoscaler), so the
router's side is spelled here as small protocols: a `ReplicaSink` that learns when a
replica can take traffic or must stop getting it, and a `DemandSource` the control loop
reads. A backend (local processes, Kubernetes, static URLs) implements `ReplicaBackend`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

logger = logging.getLogger("mlfe.autoscaler")


@dataclass(frozen=True)
class DeploymentKey:
    """One version of one service: the unit a backend deploys and scales."""

    service: str
    version: str

    def __str__(self) -> str:
        return f"{self.service}/{self.version}"


@dataclass(frozen=True)
class ModelFile:
    """A registered model as the runtime's `--model NAME:VERSION:PATH` names it."""

    name: str
    version: str
    path: str

    def __post_init__(self) -> None:
        # The runtime splits the flag on ':' (the path may contain more of them).
        for label, value in (("name", self.name), ("version", self.version)):
            if not value or ":" in value:
                raise ValueError(f"model {label} {value!r} must be non-empty without ':'")

    def as_flag(self) -> str:
        return f"{self.name}:{self.version}:{self.path}"


@dataclass(frozen=True)
class ReplicaTemplate:
    """What each replica of a deployment runs.

    Either an entry script (the local and Kubernetes backends start the scoring runtime
    with it) or fixed `urls` of replicas someone else runs (the static backend).
    """

    entry_script: str | None = None
    source_dir: str | None = None
    model_dir: str | None = None
    models: tuple[ModelFile, ...] = ()
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    slots: int = 1  # maxConcurrentRequestsPerContainer
    scoring_timeout_ms: int = 60_000
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.entry_script is None) == (not self.urls):
            raise ValueError("a replica template needs either an entry script or replica urls")
        if self.model_dir is not None and self.models:
            raise ValueError("give either a model directory or a list of models, not both")
        if self.slots < 1:
            raise ValueError(f"maxConcurrentRequestsPerContainer ({self.slots}) must be at least 1")
        if self.scoring_timeout_ms < 1:
            raise ValueError(f"scoringTimeoutMs ({self.scoring_timeout_ms}) must be positive")
        # Frozen means frozen: a caller's dict must not change the template afterwards.
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "urls", tuple(self.urls))

    @property
    def scoring_timeout(self) -> float:
        return self.scoring_timeout_ms / 1000


class ReplicaSink(Protocol):
    """The router's side: which replicas take traffic. Called on the event loop."""

    def replica_ready(self, key: DeploymentKey, replica_id: str, address: str) -> None:
        """Put a replica into rotation; `address` is "unix:/path" or "host:port"."""

    def replica_draining(self, key: DeploymentKey, replica_id: str) -> Awaitable[None]:
        """Send the replica no new work; resolves once its in-flight requests finished."""

    def replica_removed(self, key: DeploymentKey, replica_id: str) -> None:
        """Forget the replica: it is stopped or gone."""


def notify_sink(method: Callable[..., object], *args: object) -> Awaitable[None] | None:
    """Tell the sink about a replica; a sink error is logged, never allowed to break the
    backend's own bookkeeping (the replica exists whatever the router made of it)."""
    try:
        return method(*args)  # type: ignore[return-value]
    except Exception:
        logger.exception("event=sink-error call=%s", getattr(method, "__name__", method))
        return None


class DemandSource(Protocol):
    def read_demand(self, key: DeploymentKey) -> float:
        """Time-averaged requests in flight plus waiting since the previous call."""


class DeploymentState(str, enum.Enum):
    """A deployment's state, named as Azure ML names service states (DESIGN §2)."""

    TRANSITIONING = "Transitioning"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNSCHEDULABLE = "Unschedulable"
    FAILED = "Failed"


@dataclass(frozen=True)
class DeploymentStatus:
    """A snapshot of one deployment as its backend sees it."""

    state: DeploymentState
    ready: int  # replicas in rotation
    starting: int  # started, not ready yet
    warm: int  # ready, kept out of rotation as standby
    desired: int
    message: str = ""


@dataclass(frozen=True)
class ReplicaLog:
    """One replica and the last lines of its log, for the management API."""

    id: str
    state: str  # Starting, Ready, Warm, Draining, Stopped, Failed, Unhealthy, ...
    log: str


class ReplicaBackend(Protocol):
    """Where replicas run. Every method is called on the event loop."""

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int, warm: int
    ) -> None:
        """Start (or roll to) `template` with `replicas` in rotation and `warm` on standby.

        Returns once replicas are starting; `status()` tells when they serve."""

    async def scale(self, key: DeploymentKey, replicas: int) -> None:
        """Change how many replicas are in rotation."""

    async def delete(self, key: DeploymentKey) -> None:
        """Drain and stop every replica of the deployment and forget it."""

    def status(self, key: DeploymentKey) -> DeploymentStatus: ...

    def ready_count(self, key: DeploymentKey) -> int:
        """Replicas of the deployment in rotation now."""

    async def close(self) -> None:
        """Stop every replica of every deployment (mlfe is shutting down)."""
