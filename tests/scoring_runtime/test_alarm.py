"""The alarm rings by the earliest time set, and a later time waits for the callback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from scoring_runtime.alarm import Alarm
from tests.helpers.manual_time import ManualTimeLoop


@pytest.fixture
def loop() -> Iterator[ManualTimeLoop]:
    loop = ManualTimeLoop(now=100.0)
    yield loop
    loop.close()


def run_until(loop: ManualTimeLoop, now: float) -> None:
    loop.now = now
    for _ in range(3):
        loop.run_until_complete(asyncio.sleep(0))


def test_an_earlier_time_moves_the_alarm_and_a_later_one_does_not(loop: ManualTimeLoop) -> None:
    rang: list[float] = []
    alarm = Alarm(loop, lambda: rang.append(loop.now))
    alarm.set(110.0)
    alarm.set(105.0)
    alarm.set(120.0)  # left for the callback to come back to
    assert alarm.is_set and alarm.when == 105.0
    run_until(loop, 104.0)
    assert rang == []
    run_until(loop, 105.0)
    assert rang == [105.0] and not alarm.is_set
    alarm.set(120.0)  # after ringing, any time sets it
    run_until(loop, 119.0)
    assert rang == [105.0]
    run_until(loop, 120.0)
    assert rang == [105.0, 120.0]


def test_a_cancelled_alarm_does_not_ring(loop: ManualTimeLoop) -> None:
    rang: list[float] = []
    alarm = Alarm(loop, lambda: rang.append(loop.now))
    alarm.set(101.0)
    alarm.cancel()
    assert not alarm.is_set
    run_until(loop, 200.0)
    assert rang == []
    alarm.cancel()  # cancelling an alarm not set is harmless
