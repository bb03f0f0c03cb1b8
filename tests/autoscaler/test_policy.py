"""The scaling decision, driven by a synthetic clock: no sleeps, no processes."""

from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np
import pytest

from autoscaler.policy import Decision, DemandWindow, ScalingConfig, ScalingPolicy

WINDOW = 60.0
# Mean demand from 0.3 to 20: a replica boundary every 0.7, many of them grazed by noise.
NOISY_LEVELS = [0.3 + 0.1 * i for i in range(68)] + [8.0 + i for i in range(13)]


def drive(
    policy: ScalingPolicy, demands: list[float], *, current: int, start: float = 0.0
) -> list[tuple[float, Decision]]:
    """One decision per 1 s tick, applied at once, as an ideal backend would."""
    decisions = []
    for second, demand in enumerate(demands):
        now = start + second
        decision = policy.decide(demand, current, now)
        decisions.append((now, decision))
        current = decision.desired
    return decisions


def reversals(decisions: list[tuple[float, Decision]], window: float) -> int:
    """Changes of direction (up then down, or down then up) less than `window` apart."""
    changes = [
        (now, after.desired - before.desired)
        for (_, before), (now, after) in itertools.pairwise(decisions)
        if after.desired != before.desired
    ]
    return sum(
        1
        for (earlier, step), (later, next_step) in itertools.pairwise(changes)
        if (step > 0) != (next_step > 0) and later - earlier < window
    )


def steady_load(level: float, seconds: int, seed: int, service_time: float = 0.05) -> list[float]:
    """Demand of Poisson arrivals at a steady rate, each busy for `service_time`,
    per 1 s tick: the noise real traffic has around a mean of `level`."""
    arrivals = np.random.default_rng(seed).poisson(level / service_time, seconds)
    return [float(count) * service_time for count in arrivals]


def test_a_step_up_is_decided_on_the_tick_its_demand_is_seen() -> None:
    policy = ScalingPolicy(ScalingConfig())
    decisions = drive(policy, [0.5] * 5 + [3.0], current=1)

    assert [d.desired for _, d in decisions] == [1, 1, 1, 1, 1, 5]
    assert decisions[-1][1].reason == "scale-up"


@pytest.mark.parametrize("tick", [1.0, 0.25])
def test_a_step_down_applies_exactly_one_window_after_the_last_tick_that_needed_it(
    tick: float,
) -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW))
    last_busy = 10.0
    current = 1
    decision_at = {}
    for i in range(int(100 / tick)):
        now = i * tick
        decision = policy.decide(3.0 if now <= last_busy else 0.5, current, now)
        decision_at[now] = decision
        current = decision.desired

    assert decision_at[last_busy].desired == 5
    assert decision_at[last_busy + WINDOW - tick].desired == 5
    assert decision_at[last_busy + WINDOW - tick].reason == "window"
    assert decision_at[last_busy + WINDOW].desired == 1
    assert decision_at[last_busy + WINDOW].reason == "scale-down"


def test_a_decrease_follows_the_largest_demand_left_in_the_window() -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW))
    # 5 replicas' worth for 10 s, then 3 replicas' worth for 30 s, then idle.
    decisions = drive(policy, [3.5] * 10 + [1.5] * 30 + [0.0] * 100, current=1)
    desired = [d.desired for _, d in decisions]

    assert desired[9 + 59] == 5
    assert desired[9 + 60] == 3  # the 5-replica demand has left the window
    assert desired[39 + 59] == 3
    assert desired[39 + 60] == 1


def test_a_ramp_down_lags_the_window_by_seconds_at_most() -> None:
    config = ScalingConfig(max_replicas=20, scale_down_window=WINDOW)
    ramp = [10.0] * 60 + [10.0 - i / 30 for i in range(300)] + [0.0] * 120
    decisions = drive(ScalingPolicy(config), ramp, current=1)

    for second in range(60, len(ramp)):
        # A slow, smooth decline is hardly jitter: little headroom is kept for it.
        window_peak = max(ramp[max(0, second - 59) : second + 1])
        a_little_longer_peak = max(ramp[max(0, second - 62) : second + 1])
        desired = decisions[second][1].desired
        assert config.clamp(config.replicas_for(window_peak)) <= desired
        assert desired <= config.clamp(config.replicas_for(a_little_longer_peak))


def test_increases_and_decreases_are_clamped_to_min_and_max() -> None:
    policy = ScalingPolicy(ScalingConfig(min_replicas=2, max_replicas=4, scale_down_window=0))

    busy = policy.decide(demand=100.0, current=2, now=0.0)
    still_busy = policy.decide(demand=100.0, current=4, now=1.0)
    idle = policy.decide(demand=0.0, current=4, now=2.0)
    still_idle = policy.decide(demand=0.0, current=2, now=3.0)

    assert (busy.desired, busy.wanted, busy.reason) == (4, 4, "scale-up")
    assert still_busy.reason == "clamp-max"
    assert (idle.desired, idle.wanted, idle.reason) == (2, 2, "scale-down")
    assert still_idle.reason == "clamp-min"


def test_slots_per_replica_divide_the_demand() -> None:
    policy = ScalingPolicy(ScalingConfig(slots_per_replica=4, target_utilization=0.5))

    assert policy.decide(demand=6.0, current=1, now=0.0).desired == 3  # 6 / (4 * 0.5)
    assert policy.decide(demand=6.1, current=3, now=1.0).desired == 4


@pytest.mark.parametrize(
    ("demand", "replicas"),
    [(1.4, 2), (2.1, 3), (2.8, 4), (1.4 + 1e-6, 3), (0.7, 1), (0.0, 1)],
)
def test_demand_exactly_at_a_boundary_does_not_cost_a_replica(demand: float, replicas: int) -> None:
    # 1.4 / 0.7 is 2.0000000000000004 in floating point.
    decision = ScalingPolicy(ScalingConfig()).decide(demand, current=1, now=0.0)

    assert decision.wanted == replicas


def test_steady_demand_scales_down_to_what_it_needs_after_the_window() -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW))
    decisions = drive(policy, [3.5] * 5 + [1.3] * 70, current=1)

    assert decisions[-1][1].desired == 2  # 1.3 / 0.7, rounded up


def test_noisy_demand_keeps_headroom_for_its_jitter_when_scaling_down() -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW, scale_down_headroom=3))
    # The peak, 1.3, fits 2 replicas, but demand moves 0.2 a tick: 1.3 + 3 * 0.2 needs 3.
    decisions = drive(policy, [3.5] * 5 + [1.1, 1.3] * 35, current=1)

    assert decisions[-1][1].desired == 3
    assert decisions[-1][1].reason == "headroom"


def test_noisy_steady_load_never_reverses_within_a_window() -> None:
    """Ten minutes of Poisson traffic at each level, short and long requests."""
    for service_time, level in itertools.product([0.05, 0.2], NOISY_LEVELS):
        config = ScalingConfig(max_replicas=40, scale_down_window=WINDOW)
        demands = steady_load(level, seconds=600, seed=7, service_time=service_time)
        decisions = drive(ScalingPolicy(config), demands, current=1)

        assert reversals(decisions, WINDOW) == 0, f"{level=:.1f} {service_time=}"
        assert decisions[-1][1].desired >= config.replicas_for(level)


def test_without_headroom_the_same_load_flaps() -> None:
    """Why the headroom exists: with the window alone, noise that grazes a replica
    boundary now and then scales down after a quiet minute and straight back up."""
    config = ScalingConfig(max_replicas=40, scale_down_window=WINDOW, scale_down_headroom=0)
    flapping = 0
    for level in NOISY_LEVELS:
        decisions = drive(ScalingPolicy(config), steady_load(level, 600, seed=7), current=1)
        flapping += reversals(decisions, WINDOW) > 0

    assert flapping > len(NOISY_LEVELS) // 4


@pytest.mark.parametrize("seed", range(5))
def test_a_decrease_never_follows_an_increase_within_a_window(seed: int) -> None:
    rng = random.Random(seed)
    demands = [rng.choice([0.0, 0.5, 2.0, 5.0]) * rng.random() for _ in range(1200)]
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW, scale_down_headroom=0))
    desired = [d.desired for _, d in drive(policy, demands, current=1)]

    last_increase = -WINDOW
    for now, (before, after) in enumerate(itertools.pairwise(desired), start=1):
        if after > before:
            last_increase = now
        elif after < before:
            assert now - last_increase >= WINDOW


def test_a_fresh_policy_keeps_the_replicas_that_exist_for_a_window() -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW))
    decisions = drive(policy, [0.0] * 61, current=4, start=100.0)

    assert decisions[0][1].reason == "window"
    assert decisions[59][1].desired == 4
    assert decisions[60][1].desired == 1


def test_reconfigure_keeps_the_history_and_applies_new_bounds_at_once() -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=WINDOW))
    drive(policy, [3.5] + [0.0] * 10, current=1)  # 5 replicas, held by the window

    policy.reconfigure(dataclasses.replace(policy.config, target_utilization=0.5))
    assert policy.decide(0.0, current=5, now=11.0).desired == 7  # 3.5 / 0.5, still held
    policy.reconfigure(dataclasses.replace(policy.config, max_replicas=3))
    assert policy.decide(0.0, current=7, now=12.0).desired == 3
    assert policy.decide(0.0, current=3, now=60.0).desired == 1


def test_without_a_window_a_decrease_applies_at_once() -> None:
    policy = ScalingPolicy(ScalingConfig(scale_down_window=0))
    decisions = drive(policy, [3.5, 1.4, 0.0], current=5)

    assert [d.desired for _, d in decisions] == [5, 2, 1]


@pytest.mark.parametrize("demand", [-0.5, float("nan"), float("inf")])
def test_impossible_demand_is_refused(demand: float) -> None:
    with pytest.raises(ValueError, match="demand"):
        ScalingPolicy(ScalingConfig()).decide(demand, current=1, now=0.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_replicas": 0}, r"minReplicas \(0\) must be at least 1"),
        ({"min_replicas": 3, "max_replicas": 2}, r"maxReplicas \(2\) is below minReplicas \(3\)"),
        ({"target_utilization": 0.0}, r"targetUtilization \(0\) must be above 0"),
        ({"target_utilization": 1.5}, r"targetUtilization \(150\)"),
        ({"slots_per_replica": 0}, r"maxConcurrentRequestsPerContainer \(0\)"),
        ({"scale_down_window": -1.0}, r"scaleDownDelaySeconds \(-1.0\)"),
        ({"scale_down_window": float("nan")}, r"scaleDownDelaySeconds \(nan\)"),
        ({"scale_down_headroom": -1.0}, r"scaleDownHeadroom \(-1.0\)"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScalingConfig(**settings)


def test_demand_window_forgets_only_what_left_it() -> None:
    window = DemandWindow()
    for now, demand in [(0.0, 5.0), (1.0, 2.0), (2.0, 4.0), (3.0, 1.0)]:
        window.record(now, demand)

    assert (window.peak, window.jitter) == (5.0, 8.0 / 3)  # changes 3, 2 and 3
    window.forget_until(0.0)
    assert (window.peak, window.jitter) == (4.0, 2.5)
    window.forget_until(2.0)
    assert (window.peak, window.jitter) == (1.0, 0.0)
    window.forget_until(5.0)
    assert not window
