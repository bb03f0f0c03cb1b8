"""The control loop: every refresh period, read demand, decide, and tell the backend.

One asyncio task per autoscaled deployment. The decision is `ScalingPolicy`'s; the loop
only measures (through a `DemandSource`), applies (through a `ReplicaBackend`) and logs
one line whenever the decided count changes. A deployment with a fixed `numReplicas` is
deployed once and gets no task.

With several routers (Kubernetes) only the leader acts (`should_act`). The others keep
reading demand and act on nothing. A loop that starts to act adopts the count the
backend runs (the previous leader's) and starts its policy afresh from it, so a
takeover scales up at once but removes no replica before a whole scale-down window of
its own measurements says so.
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
    # `current` may be someone else's by now (another router's, or from before a
    # restart): take the backend's count before acting.
    adopt: bool = False


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
        # others keep reading demand so their readers stay current, and act on nothing.
        self._should_act = should_act
        self._controlled: dict[DeploymentKey, _Controlled] = {}

    @property
    def acting(self) -> bool:
        """Whether this loop scales deployments now (it leads, or nobody needs to)."""
        return self._should_act()

    async def deploy(
        self,
        key: DeploymentKey,
        template: ReplicaTemplate,
        scaling: Scaling,
        *,
        warm: int = 0,
        initial: int | None = None,
    ) -> None:
        """Deploy (or redeploy) `key` and control its count from now on.

        An autoscaled deployment starts at `initial` (a restored count) when given, else
        at the count a redeploy keeps, else at its minimum; always within its bounds.
        """
        previous = self._controlled.get(key)
        await self._stop_task(key)
        if isinstance(scaling, FixedReplicas):
            await self.backend.deploy(key, template, scaling.replicas, warm)
            return
        if initial is None and previous is not None:
            # A redeploy keeps the count demand called for, within the new bounds.
            initial = self._running_count(previous)
        start = scaling.config.clamp(initial or 0)
        await self.backend.deploy(key, template, start, warm)
        self._start(key, scaling, start, adopt=False)

    async def follow(self, key: DeploymentKey, scaling: Scaling) -> None:
        """Control the count of a deployment that runs already without deploying it: one
        another router deployed, or this router before a restart. The count is the
        backend's until this loop changes it."""
        await self._stop_task(key)
        if isinstance(scaling, Autoscale):
            self._start(key, scaling, 0, adopt=True)

    def controls(self, key: DeploymentKey) -> bool:
        """Whether `key` is an autoscaled deployment of this loop."""
        return key in self._controlled

    def reconfigure(self, key: DeploymentKey, config: ScalingConfig) -> None:
        """New autoscaler bounds or target for a running deployment; its history stays."""
        self._controlled[key].policy.reconfigure(config)

    async def delete(self, key: DeploymentKey) -> None:
        """Stop controlling `key` and delete its replicas."""
        await self._stop_task(key)
        await self.backend.delete(key)

    async def release(self, key: DeploymentKey) -> None:
        """Stop controlling `key` and leave its replicas to whoever deletes them."""
        await self._stop_task(key)

    async def close(self) -> None:
        """Stop every control task; the replicas stay (the backend's owner closes it)."""
        for key in list(self._controlled):
            await self._stop_task(key)

    def decision(self, key: DeploymentKey) -> Decision | None:
        """The latest decision for an autoscaled deployment (None before its first tick)."""
        controlled = self._controlled.get(key)
        return controlled.last if controlled else None

    def desired(self, key: DeploymentKey) -> int | None:
        """The replica count last applied to an autoscaled deployment (None until this
        loop knows it: not controlled, or following a count it has not adopted yet)."""
        controlled = self._controlled.get(key)
        return controlled.current if controlled and not controlled.adopt else None

    def _start(self, key: DeploymentKey, scaling: Autoscale, current: int, *, adopt: bool) -> None:
        controlled = _Controlled(
            key, ScalingPolicy(scaling.config), scaling.refresh_period, current, adopt=adopt
        )
        controlled.task = asyncio.create_task(self._run(controlled), name=f"autoscale {key}")
        self._controlled[key] = controlled

    def _running_count(self, controlled: _Controlled) -> int:
        """The count a deployment runs at: ours if we applied it, else the backend's
        (the leader's, which a follower's `current` does not follow)."""
        if not controlled.adopt and self._should_act():
            return controlled.current
        try:
            return self.backend.status(controlled.key).desired
        except LookupError:
            return controlled.current

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
            controlled.adopt = True  # the leader may change the count meanwhile
            return
        if controlled.adopt:
            try:
                current = self.backend.status(controlled.key).desired
            except LookupError:
                return  # not deployed (yet): nothing to scale
            # Fresh history: the policy's first decision counts these replicas as needed
            # until now, so none goes before a scale-down window of our own demand.
            controlled.policy = ScalingPolicy(controlled.policy.config)
            controlled.current, controlled.adopt = current, False
            logger.info("event=adopt deployment=%s replicas=%d", controlled.key, current)
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
