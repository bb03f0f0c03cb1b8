"""The control loop on a manual clock: a real ScalingPolicy, a backend that records calls."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentState,
    DeploymentStatus,
    ReplicaTemplate,
)
from autoscaler.loop import Autoscale, ControlLoop, FixedReplicas
from autoscaler.policy import ScalingConfig

KEY = DeploymentKey("svc", "v1")
TEMPLATE = ReplicaTemplate(entry_script="score.py")


class ManualTime:
    """A clock that moves only when the test says so, and the sleep that goes with it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and letting it run."""
        target = self.now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target + 1e-9:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)
            await _settle()
        self.now = target


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@dataclass
class RecordingBackend:
    """Records what the loop asks for; the loop's contract is the calls it makes."""

    calls: list[tuple[str, int, float]] = field(default_factory=list)
    time: ManualTime | None = None
    fail_next_scale: bool = False
    # What the backend runs, as status() reports it (another router may change it).
    running: int = 0
    deployed: bool = True

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int, warm: int
    ) -> None:
        self.calls.append(("deploy", replicas, self._now()))
        self.running = replicas

    async def scale(self, key: DeploymentKey, replicas: int) -> None:
        if self.fail_next_scale:
            self.fail_next_scale = False
            raise OSError("backend unavailable")
        self.calls.append(("scale", replicas, self._now()))
        self.running = replicas

    async def delete(self, key: DeploymentKey) -> None:
        self.calls.append(("delete", 0, self._now()))

    def status(self, key: DeploymentKey) -> DeploymentStatus:
        if not self.deployed:
            raise LookupError(key)
        return DeploymentStatus(DeploymentState.HEALTHY, 0, 0, 0, self.running)

    def ready_count(self, key: DeploymentKey) -> int:
        return 0

    async def close(self) -> None:
        pass

    def scales(self) -> list[tuple[int, float]]:
        return [(n, t) for call, n, t in self.calls if call == "scale"]

    def _now(self) -> float:
        return self.time.now if self.time else 0.0


@dataclass
class Demand:
    """A demand level per deployment, as the router's pools would report it."""

    level: float = 0.0
    reads: int = 0

    def read_demand(self, key: DeploymentKey) -> float:
        self.reads += 1
        return self.level


@dataclass
class Harness:
    time: ManualTime
    backend: RecordingBackend
    demand: Demand
    loop: ControlLoop


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    time = ManualTime()
    backend = RecordingBackend(time=time)
    demand = Demand()
    acting = {"leader": True}
    loop = ControlLoop(
        backend, demand, clock=time.clock, sleep=time.sleep, should_act=lambda: acting["leader"]
    )
    yield Harness(time, backend, demand, loop)
    await loop.close()


def autoscale(window: float = 10.0, **config: object) -> Autoscale:
    settings = {"min_replicas": 1, "max_replicas": 10, "scale_down_window": window, **config}
    return Autoscale(ScalingConfig(**settings), refresh_period=1.0)  # type: ignore[arg-type]


async def test_fixed_replicas_deploy_once_and_never_scale(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, FixedReplicas(3), warm=1)
    harness.demand.level = 50
    await harness.time.advance(10)
    assert harness.backend.calls == [("deploy", 3, 1000.0)]
    assert harness.demand.reads == 0
    assert harness.loop.decision(KEY) is None


async def test_autoscaled_deployment_starts_at_min_replicas(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(min_replicas=2))
    assert harness.backend.calls == [("deploy", 2, 1000.0)]
    assert harness.loop.desired(KEY) == 2


async def test_ticks_every_refresh_period(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale())
    await harness.time.advance(0.5)
    assert harness.demand.reads == 0
    await harness.time.advance(5)
    assert harness.demand.reads == 5


async def test_step_up_is_applied_on_the_next_tick_and_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale())
    await harness.time.advance(3)
    assert harness.backend.scales() == []

    caplog.set_level(logging.INFO, logger="mlfe.autoscaler")
    harness.demand.level = 5.0  # ceil(5 / 0.7) = 8 replicas at 70 % of one slot each
    await harness.time.advance(1)
    assert harness.backend.scales() == [(8, 1004.0)]
    lines = [r.getMessage() for r in caplog.records if "event=scale" in r.getMessage()]
    assert lines == ["event=scale deployment=svc/v1 demand=5.00 from=1 to=8 reason=scale-up"]

    await harness.time.advance(5)  # steady load: no new decision, no new line
    assert harness.backend.scales() == [(8, 1004.0)]
    assert len([r for r in caplog.records if "event=scale" in r.getMessage()]) == 1
    decision = harness.loop.decision(KEY)
    assert decision is not None and decision.desired == 8 and decision.reason == "hold"


async def test_step_down_waits_exactly_the_window(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(window=10.0))
    harness.demand.level = 2.8  # 4 replicas
    await harness.time.advance(1)
    harness.demand.level = 0.5  # 1 replica
    await harness.time.advance(1)
    assert harness.backend.scales() == [(4, 1001.0)]
    # The last tick that needed 4 replicas was at 1001: they go at 1011, not a tick sooner.
    await harness.time.advance(8)
    assert harness.backend.scales() == [(4, 1001.0)]
    assert harness.loop.decision(KEY).reason == "window"  # type: ignore[union-attr]
    await harness.time.advance(1)
    assert harness.backend.scales() == [(4, 1001.0), (1, 1011.0)]


async def test_noisy_steady_load_causes_no_reversals(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(window=10.0))
    for level in [2.0, 3.1, 2.4, 3.3, 1.9, 2.9, 3.2, 2.2, 3.0, 2.6] * 3:
        harness.demand.level = level
        await harness.time.advance(1)
    targets = [n for n, _ in harness.backend.scales()]
    assert targets == sorted(targets)  # only ever up while the load is steady
    assert targets[-1] == 5  # ceil(3.3 / 0.7)


async def test_counts_are_clamped_to_the_bounds(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(min_replicas=2, max_replicas=4))
    harness.demand.level = 100
    await harness.time.advance(1)
    assert harness.backend.scales() == [(4, 1001.0)]
    await harness.time.advance(1)
    assert harness.loop.decision(KEY).reason == "clamp-max"  # type: ignore[union-attr]


async def test_slots_per_replica_divide_the_demand(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(slots_per_replica=4))
    harness.demand.level = 8.0  # ceil(8 / (4 * 0.7)) = 3
    await harness.time.advance(1)
    assert harness.backend.scales() == [(3, 1001.0)]


async def test_a_failed_scale_call_is_retried_on_the_next_tick(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale())
    harness.backend.fail_next_scale = True
    harness.demand.level = 2.0
    await harness.time.advance(1)
    assert harness.backend.scales() == []
    await harness.time.advance(1)
    assert harness.backend.scales() == [(3, 1002.0)]


async def test_only_the_leader_acts_but_everyone_keeps_reading(harness: Harness) -> None:
    leader = {"yes": False}
    loop = ControlLoop(
        harness.backend,
        harness.demand,
        clock=harness.time.clock,
        sleep=harness.time.sleep,
        should_act=lambda: leader["yes"],
    )
    await loop.deploy(KEY, TEMPLATE, autoscale())
    harness.demand.level = 3.0
    await harness.time.advance(3)
    assert harness.demand.reads == 3
    assert harness.backend.scales() == []
    leader["yes"] = True
    await harness.time.advance(1)
    assert harness.backend.scales() == [(5, 1004.0)]
    await loop.close()


async def test_redeploy_keeps_the_count_and_delete_stops_the_loop(harness: Harness) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale())
    harness.demand.level = 2.0
    await harness.time.advance(1)
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(max_replicas=2))
    assert harness.backend.calls[-1] == ("deploy", 2, 1001.0)  # 3 clamped to the new max

    await harness.loop.delete(KEY)
    reads = harness.demand.reads
    await harness.time.advance(5)
    assert harness.demand.reads == reads
    assert harness.backend.calls[-1] == ("delete", 0, 1001.0)
    assert harness.loop.desired(KEY) is None


async def test_refresh_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="refreshPeriodInSeconds"):
        Autoscale(ScalingConfig(), refresh_period=0)


# -- restoring and following -----------------------------------------------------------------


async def test_a_restored_deployment_starts_at_its_count_and_keeps_it_a_window(
    harness: Harness,
) -> None:
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(window=10.0, max_replicas=5), initial=4)
    assert harness.backend.calls == [("deploy", 4, 1000.0)]
    assert harness.loop.desired(KEY) == 4
    await harness.time.advance(10)  # no demand, but no window of it yet
    assert harness.backend.scales() == []
    await harness.time.advance(1)
    assert harness.backend.scales() == [(1, 1011.0)]
    # A stored count beyond the bounds is clamped.
    await harness.loop.deploy(KEY, TEMPLATE, autoscale(max_replicas=5), initial=9)
    assert harness.backend.calls[-1] == ("deploy", 5, 1011.0)


async def test_following_adopts_the_backends_count_without_deploying(harness: Harness) -> None:
    harness.backend.deployed = False
    await harness.loop.follow(KEY, autoscale(window=10.0))
    await harness.loop.follow(DeploymentKey("svc", "fixed"), FixedReplicas(2))
    assert harness.loop.desired(KEY) is None  # not known yet
    await harness.time.advance(2)  # another router has not deployed it yet: nothing to do
    assert harness.backend.calls == []
    assert not harness.loop.controls(DeploymentKey("svc", "fixed"))

    harness.backend.deployed, harness.backend.running = True, 3
    harness.demand.level = 0.7  # one replica's worth
    await harness.time.advance(1)
    assert harness.loop.desired(KEY) == 3 and harness.backend.calls == []
    await harness.time.advance(9)
    assert harness.backend.scales() == []
    await harness.time.advance(1)
    assert harness.backend.scales() == [(1, 1013.0)]


async def test_a_new_leader_adopts_the_count_keeps_it_a_window_and_scales_up_at_once(
    harness: Harness,
) -> None:
    leader = {"yes": False}
    loop = ControlLoop(
        harness.backend,
        harness.demand,
        clock=harness.time.clock,
        sleep=harness.time.sleep,
        should_act=lambda: leader["yes"],
    )
    await loop.deploy(KEY, TEMPLATE, autoscale(window=10.0))
    assert not loop.acting
    harness.backend.running = 4  # the leader scaled it meanwhile
    await harness.time.advance(3)
    # A follower's redeploy keeps what runs, not the count it deployed with.
    await loop.deploy(KEY, TEMPLATE, autoscale(window=10.0))
    assert harness.backend.calls[-1] == ("deploy", 4, 1003.0)

    leader["yes"] = True  # the leader died: this one takes over at 4
    harness.demand.level = 0.0
    await harness.time.advance(10)
    assert harness.backend.scales() == []
    assert loop.desired(KEY) == 4
    harness.demand.level = 4.0
    await harness.time.advance(1)
    assert harness.backend.scales() == [(6, 1014.0)]
    await loop.close()
