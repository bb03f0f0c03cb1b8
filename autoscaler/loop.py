"""The control loop: every refresh period, read demand, decide, and tell the backend.

One asyncio task per autoscaled deployment. The decision is `ScalingPolicy`'s; the loop
only measures (through a `DemandSource`), applies (through a `ReplicaBackend`) and logs
one line whenever the decided count changes. A deployment with a fixed `numReplicas` is
deployed once and gets no task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from autoscaler.backends.base import DemandSource, DeploymentKey, ReplicaBackend, ReplicaTemplate
from autoscaler.policy import Decision, ScalingConfig, ScalingPolicy

logger = logging.getLogger("mlfe.autoscaler")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Autoscale:
    """`autoScaler` settings: the policy's configuration and the tick."""

    config: ScalingConfig
    refresh_period: float = 1.0

    def __post_init__(self) -> None:
        if not self.refresh_period > 0:
            raise ValueError(
                f"refreshPeriodInSeconds ({self.refresh_period}) must be a positive number"
            )


@dataclass(frozen=True)
class FixedReplicas:
    """`numReplicas`: a fixed count, no control loop."""

    replicas: int

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"numReplicas ({self.replicas}) must not be negative")


Scaling = Autoscale | FixedReplicas


@dataclass(eq=False)
class _Controlled:
    """One autoscaled deployment: its policy, what was last applied, and its task."""

    key: DeploymentKey
    policy: ScalingPolicy
    refresh_period: float
    current: int
    last: Decision | None = None
    task: asyncio.Task[None] | None = None


class ControlLoop:
    """Runs the scaling policy of every autoscaled deployment against one backend."""

    def __init__(
        self,
        backend: ReplicaBackend,
        demand: DemandSource,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        should_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self.backend = backend
        self.demand = demand
        self._clock = clock
        self._sleep = sleep
        # Only one router may scale a deployment (leader election on Kubernetes); the
        # others keep reading demand so their averages stay current, and act on nothing.
        self._should_act = should_act
        self._controlled: dict[DeploymentKey, _Controlled] = {}

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, scaling: Scaling, *, warm: int = 0
    ) -> None:
        """Deploy (or redeploy) `key` and control its count from now on."""
        previous = self._controlled.get(key)
        await self._stop_task(key)
        if isinstance(scaling, FixedReplicas):
            await self.backend.deploy(key, template, scaling.replicas, warm)
            return
        # A redeploy keeps the count demand called for, within the new bounds.
        initial = scaling.config.clamp(previous.current if previous else 0)
        await self.backend.deploy(key, template, initial, warm)
        controlled = _Controlled(
            key, ScalingPolicy(scaling.config), scaling.refresh_period, initial
        )
        controlled.task = asyncio.create_task(self._run(controlled), name=f"autoscale {key}")
        self._controlled[key] = controlled

    def reconfigure(self, key: DeploymentKey, config: ScalingConfig) -> None:
        """New autoscaler bounds or target for a running deployment; its history stays."""
        self._controlled[key].policy.reconfigure(config)

    async def delete(self, key: DeploymentKey) -> None:
        """Stop controlling `key` and delete its replicas."""
        await self._stop_task(key)
        await self.backend.delete(key)

    async def close(self) -> None:
        """Stop every control task; the replicas stay (the backend's owner closes it)."""
        for key in list(self._controlled):
            await self._stop_task(key)

    def decision(self, key: DeploymentKey) -> Decision | None:
        """The latest decision for an autoscaled deployment (None before its first tick)."""
        controlled = self._controlled.get(key)
        return controlled.last if controlled else None

    def desired(self, key: DeploymentKey) -> int | None:
        """The replica count last applied to an autoscaled deployment."""
        controlled = self._controlled.get(key)
        return controlled.current if controlled else None

    async def _stop_task(self, key: DeploymentKey) -> None:
        controlled = self._controlled.pop(key, None)
        if controlled is None or controlled.task is None:
            return
        controlled.task.cancel()
        # wait() rather than await: the task's cancellation is not ours to re-raise.
        await asyncio.wait({controlled.task})

    async def _run(self, controlled: _Controlled) -> None:
        period = controlled.refresh_period
        next_tick = self._clock() + period
        while True:
            await self._sleep(max(0.0, next_tick - self._clock()))
            now = self._clock()
            # Ticks keep a fixed cadence; after a stall, skip the missed ones.
            next_tick = max(next_tick + period, now)
            try:
                await self._tick(controlled, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event=autoscale-error deployment=%s", controlled.key)

    async def _tick(self, controlled: _Controlled, now: float) -> None:
        """One control step: measure, decide, apply if the count changes."""
        demand = self.demand.read_demand(controlled.key)
        if not self._should_act():
            return
        decision = controlled.policy.decide(demand, controlled.current, now)
        controlled.last = decision
        if decision.desired == controlled.current:
            return
        logger.info(
            "event=scale deployment=%s demand=%.2f from=%d to=%d reason=%s",
            controlled.key,
            demand,
            controlled.current,
            decision.desired,
            decision.reason,
        )
        # `current` changes only once the backend accepted the count: a failed call is
        # retried on the next tick.
        await self.backend.scale(controlled.key, decision.desired)
        controlled.current = decision.desired
