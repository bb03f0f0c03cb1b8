"""Slots, concurrency and the scoring timeout (scoring_runtime/slots.py), end to end."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.helpers.runtime_proc import RuntimeProcess


@pytest.fixture(scope="module")
def one_slot_short_timeout(runtime_for) -> RuntimeProcess:
    return runtime_for("slow.py", uds=True, args=["--scoring-timeout-ms", "300"])


@pytest.fixture(scope="module")
def two_slots(runtime_for) -> RuntimeProcess:
    return runtime_for("slow.py", args=["--max-concurrent", "2"])


@pytest.fixture(scope="module")
def two_slots_one_second_timeout(runtime_for) -> RuntimeProcess:
    return runtime_for("slow.py", args=["--max-concurrent", "2", "--scoring-timeout-ms", "1000"])


async def _wait_until_busy(client, slots: int) -> None:
    for _ in range(500):
        if f"mlfe_runtime_busy_slots {slots:.1f}" in (await client.get("/metrics")).text:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {slots} busy slots")


async def test_health_probe_answers_while_run_is_busy(two_slots) -> None:
    async with two_slots.async_client() as client:
        scoring = asyncio.create_task(client.post("/score", content=b"1.5"))
        await _wait_until_busy(client, 1)
        health = await client.get("/")
        assert health.status_code == 200
        assert not scoring.done()
        assert (await scoring).status_code == 200


async def test_two_slots_run_two_calls_at_once(two_slots) -> None:
    async with two_slots.async_client() as client:
        first, second = await asyncio.gather(
            client.post("/score", content=b"1.0"), client.post("/score", content=b"1.0")
        )
    assert first.json()["max_in_flight"] == 2 or second.json()["max_in_flight"] == 2


async def test_timeout_answers_500_and_keeps_the_slot_busy(one_slot_short_timeout) -> None:
    async with one_slot_short_timeout.async_client() as client:
        slow = await client.post("/score", content=b"1.5")
        assert slow.status_code == 500
        assert slow.json() == {"message": "Scoring timeout after 300 ms"}
        assert slow.headers["x-ms-run-function-failed"] == "True"

        # The timed-out run() is still sleeping, so the one slot is still taken...
        metrics = (await client.get("/metrics")).text
        assert "mlfe_runtime_busy_slots 1.0" in metrics

        # ...and the next call only starts once that run() has really ended.
        quick = await client.post("/score", content=b"0")
        assert quick.status_code == 200
        result = quick.json()
        assert result["previous_end"] is not None
        assert result["started"] >= result["previous_end"]
        assert result["max_in_flight"] == 1

    log = one_slot_short_timeout.log()
    assert "event=run_timeout" in log
    assert "event=timed_out_call_finished" in log


async def test_each_call_gets_its_whole_timeout_from_when_it_started(
    two_slots_one_second_timeout,
) -> None:
    async with two_slots_one_second_timeout.async_client() as client:
        assert (await client.post("/score", content=b"0.1")).status_code == 200
        await asyncio.sleep(0.4)
        # Both start half a second after the first call: the first call's deadline passes
        # while they run, and must not cut short the one that ends within its own second.
        within, beyond = await asyncio.gather(
            client.post("/score", content=b"0.8"), client.post("/score", content=b"3")
        )
    assert within.status_code == 200
    assert beyond.status_code == 500
    assert beyond.json() == {"message": "Scoring timeout after 1000 ms"}


async def test_requests_beyond_the_slots_wait_instead_of_failing(one_slot_short_timeout) -> None:
    async with one_slot_short_timeout.async_client() as client:
        responses = await asyncio.gather(
            *(client.post("/score", content=b"0.05") for _ in range(4))
        )
    assert [response.status_code for response in responses] == [200] * 4
    assert all(response.json()["max_in_flight"] == 1 for response in responses)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
def test_run_executes_on_a_batch_thread_and_the_event_loop_keeps_the_default(
    runtime_for,
) -> None:
    runtime = runtime_for("sched_probe.py", args=["--max-concurrent", "2"])
    with runtime.client() as client:
        answers = [client.post("/score", content=b"{}").json() for _ in range(3)]
    # init() ran on the thread that runs the event loop afterwards.
    assert answers == [{"init": "other", "run": "batch"}] * 3
