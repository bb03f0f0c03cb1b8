"""The scaling decision: how many replicas a deployment should have now.

Pure: a decision depends only on the demand already measured, the configuration, the
short history this module keeps and the `now` it is given. The control loop measures
demand and the backends start and stop replicas.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

# Demand is an average of integer counts, so demand / (c * t) often lands a rounding
# error above a whole number (1.4 / 0.7 == 2.0000000000000004); that must not cost a replica.
_ROUNDING_SLACK = 1e-9

Reason = Literal["scale-up", "scale-down", "window", "headroom", "clamp-max", "clamp-min", "hold"]


@dataclass(frozen=True)
class ScalingConfig:
    """Autoscaling settings of one deployment; messages name the configuration keys."""

    min_replicas: int = 1
    max_replicas: int = 10
    target_utilization: float = 0.70  # a fraction of the slots; the caller divides percent by 100
    slots_per_replica: int = 1  # maxConcurrentRequestsPerContainer
    scale_down_window: float = 60.0  # seconds of lower demand before a replica is removed
    # Replicas left after a scale-down must carry the window's peak demand plus this many
    # times its jitter (mean change from one tick to the next). Without it, noisy demand
    # that touches a replica boundary now and then scales down after a quiet window and
    # straight back up. Steady demand has no jitter and a smooth ramp very little.
    scale_down_headroom: float = 3.0

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ValueError(f"minReplicas ({self.min_replicas}) must be at least 1")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) is below minReplicas ({self.min_replicas})"
            )
        if not 0 < self.target_utilization <= 1:
            percent = self.target_utilization * 100
            raise ValueError(f"targetUtilization ({percent:g}) must be above 0 and at most 100")
        if self.slots_per_replica < 1:
            raise ValueError(
                f"maxConcurrentRequestsPerContainer ({self.slots_per_replica}) must be at least 1"
            )
        if not 0 <= self.scale_down_window < math.inf:
            raise ValueError(
                f"scaleDownDelaySeconds ({self.scale_down_window}) must be a number of seconds >= 0"
            )
        if not 0 <= self.scale_down_headroom < math.inf:
            raise ValueError(
                f"scaleDownHeadroom ({self.scale_down_headroom}) must be a number >= 0"
            )

    @property
    def demand_per_replica(self) -> float:
        """The demand one replica carries at the target utilization."""
        return self.slots_per_replica * self.target_utilization

    def replicas_for(self, demand: float) -> int:
        """Replicas that carry `demand` at the target utilization, before clamping."""
        return max(0, math.ceil(demand / self.demand_per_replica - _ROUNDING_SLACK))

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


@dataclass(frozen=True)
class Decision:
    """What to apply now, and why.

    `reason` names the change when there is one ("scale-up", "scale-down"), otherwise
    what keeps the count where it is: "window" (a lower count was not wanted for a whole
    scale-down window yet), "headroom" (demand is too noisy for fewer replicas),
    "clamp-max" / "clamp-min" (demand asks for more than maxReplicas / fewer than
    minReplicas) or "hold" (demand asks for exactly this).
    """

    desired: int  # replicas to have now
    wanted: int  # what this tick's demand alone calls for, clamped to [min, max]
    reason: Reason


class DemandWindow:
    """Peak and jitter of the demand recorded in a trailing time window, in O(1) amortised.

    Jitter is the mean absolute change between consecutive samples in the window: it
    measures noise rather than trend, so a smooth ramp has little, and a step stops
    counting as soon as its higher side has left the window.
    The peak comes from a second deque whose values strictly decrease: once a value at
    least as large arrives, an older one can never be the peak again, whatever the window.
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()
        self._peaks: deque[tuple[float, float]] = deque()
        # Sum of |change| between consecutive samples in the window; its rounding drift
        # is ~1e-16 of it per tick, which is negligible.
        self._total_change = 0.0

    def __bool__(self) -> bool:
        return bool(self._samples)

    def record(self, now: float, demand: float) -> None:
        if self._samples:
            self._total_change += abs(demand - self._samples[-1][1])
        self._samples.append((now, demand))
        while self._peaks and self._peaks[-1][1] <= demand:
            self._peaks.pop()
        self._peaks.append((now, demand))

    def forget_until(self, cutoff: float) -> None:
        """Drop the samples recorded at or before `cutoff`."""
        samples = self._samples
        while samples and samples[0][0] <= cutoff:
            _, oldest = samples.popleft()
            if samples:
                self._total_change -= abs(samples[0][1] - oldest)
            else:
                self._total_change = 0.0  # also sheds any rounding drift
        while self._peaks and self._peaks[0][0] <= cutoff:
            self._peaks.popleft()

    @property
    def peak(self) -> float:
        return self._peaks[0][1]

    @property
    def jitter(self) -> float:
        changes = len(self._samples) - 1
        return self._total_change / changes if changes else 0.0


class ScalingPolicy:
    """Decides a deployment's replica count, tick by tick.

    `wanted = ceil(demand / (c * t))` clamped to [min, max]. Increases apply at once.
    Decreases follow the peak demand over the trailing scale-down window
    (now - window, now], so a replica is removed only once `window` seconds have passed
    since the last tick that needed it, and only as far as the scale-down headroom allows.

    The policy keeps that window of demand; each decision is a pure function of it,
    the configuration, `current` and `now`, which must not decrease between calls.
    """

    def __init__(self, config: ScalingConfig) -> None:
        self._config = config
        self._window = DemandWindow()

    @property
    def config(self) -> ScalingConfig:
        return self._config

    def reconfigure(self, config: ScalingConfig) -> None:
        """Apply new settings from the next decision on, keeping the demand history."""
        self._config = config

    def decide(self, demand: float, current: int, now: float) -> Decision:
        """The replica count for `now`, given this tick's time-averaged demand (requests
        in flight plus waiting) and the `current` number of replicas."""
        if not 0 <= demand < math.inf:
            raise ValueError(f"demand must be a finite number >= 0, got {demand!r}")
        config, window = self._config, self._window
        if not window:
            # First decision, no history: count the replicas that already exist as
            # needed until now, so they too are kept for a window before removal.
            window.record(now, current * config.demand_per_replica)
        window.forget_until(now - config.scale_down_window)
        window.record(now, demand)

        needed = config.replicas_for(demand)
        held = config.clamp(config.replicas_for(window.peak))
        desired = held
        if held < current:
            cautious = window.peak + config.scale_down_headroom * window.jitter
            desired = min(current, config.clamp(config.replicas_for(cautious)))
        return Decision(
            desired, config.clamp(needed), _reason(config, needed, held, desired, current)
        )


def _reason(config: ScalingConfig, needed: int, held: int, desired: int, current: int) -> Reason:
    if desired > current:
        return "scale-up"
    if desired < current:
        return "scale-down"
    if held < desired:
        return "headroom"
    if config.clamp(needed) < desired:
        return "window"
    if needed > config.max_replicas:
        return "clamp-max"
    if needed < config.min_replicas:
        return "clamp-min"
    return "hold"
