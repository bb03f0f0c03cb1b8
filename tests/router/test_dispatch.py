"""Replica slots, the FIFO wait queue, drain/remove, and the demand the autoscaler reads.

Every test runs on an event loop whose clock only moves when the test says so: queue
timeouts are exercised without waiting, and timer/grant/cancel races are reproducible.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Iterator

import pytest

from router.dispatch import QueueFull, QueueTimeout, Replica, ReplicaPool
from tests.helpers.manual_time import ManualTimeLoop


@pytest.fixture
def loop() -> Iterator[ManualTimeLoop]:
    loop = ManualTimeLoop(now=1000.0)
    yield loop
    loop.close()
    # An exception inside a loop callback (a timer, a hand-over) never reaches the test
    # by itself.
    assert loop.errors == []


def run(loop: ManualTimeLoop, scenario: Callable[[], Awaitable[None]]) -> None:
    loop.run_until_complete(asyncio.wait_for(scenario(), timeout=None))


async def settle() -> None:
    """Let every callback and woken task run (grants, cancellations, hand-overs)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def advance(loop: ManualTimeLoop, seconds: float) -> None:
    await settle()  # tasks spawned just before start waiting at the old time
    loop.now += seconds
    await settle()


def make_pool(
    loop: ManualTimeLoop, *, slots: int = 1, wait: float = 1.0, length: int = 1024, seed: int = 0
) -> ReplicaPool[str]:
    return ReplicaPool(
        slots_per_replica=slots,
        max_queue_wait=wait,
        max_queue_length=length,
        clock=loop.time,
        rng=random.Random(seed),
    )


def full_pool(loop: ManualTimeLoop, *, wait: float = 1.0) -> tuple[ReplicaPool[str], Replica[str]]:
    """A pool of one replica, r1, whose one slot is held: the next request must wait."""
    pool = make_pool(loop, wait=wait)
    pool.add("r1", "a")
    busy = pool.try_acquire()
    assert busy is not None
    return pool, busy


def spawn(pool: ReplicaPool[str], exclude: Collection[str] = ()) -> asyncio.Task[Replica[str]]:
    return asyncio.ensure_future(pool.acquire(exclude))


def check_accounting(pool: ReplicaPool[str], held: list[Replica[str]]) -> None:
    """Slots counted on replicas are exactly the slots callers hold."""
    assert pool.in_flight == len(held)
    for replica in {id(r): r for r in held}.values():
        assert replica.in_flight == sum(1 for h in held if h is replica)
    for replica in pool.replicas:
        assert 0 <= replica.in_flight <= replica.slots
    ready = [r for r in pool.replicas if not r.draining]
    assert pool.ready_replicas == len(ready)
    assert pool.capacity == sum(r.slots for r in ready)
    assert pool._free == sum(r.slots - r.in_flight for r in ready)


# -- choosing a replica ------------------------------------------------------------------


def test_least_in_flight_with_several_slots(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=2)
        for name in ("r1", "r2", "r3"):
            pool.add(name, name)
        assert pool.capacity == 6
        got = [pool.try_acquire() for _ in range(3)]
        assert [r.id for r in got if r] == ["r1", "r2", "r3"]
        assert got[1] is not None
        pool.release(got[1])  # r2 is now the least busy
        assert pool.try_acquire() is got[1]
        more = [pool.try_acquire() for _ in range(3)]
        assert all(r is not None for r in more)
        assert pool.try_acquire() is None  # all 6 slots taken
        assert pool.in_flight == 6
        assert [r.in_flight for r in pool.replicas] == [2, 2, 2]

    run(loop, scenario)


def test_exclude_skips_replicas_already_tried(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop)
        pool.add("r1", "a")
        pool.add("r2", "b")
        first = pool.try_acquire(exclude={"r1"})
        assert first is not None and first.id == "r2"
        assert pool.try_acquire(exclude={"r1"}) is None  # r1 is free but excluded
        assert pool.try_acquire() is not None

    run(loop, scenario)


def test_power_of_two_choices_balances_and_never_misses_a_free_slot(
    loop: ManualTimeLoop,
) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=4, seed=3)
        for n in range(20):
            pool.add(f"r{n}", f"r{n}")
        held = [pool.try_acquire() for _ in range(40)]
        loads = [r.in_flight for r in pool.replicas]
        assert all(r is not None for r in held)
        assert max(loads) <= 3  # two choices keep the busiest close to the average (2)
        # Even at the end, when two random samples are usually full, free slots are found.
        rest = [pool.try_acquire() for _ in range(40)]
        assert all(r is not None for r in rest)
        assert pool.try_acquire() is None
        assert [r.in_flight for r in pool.replicas] == [4] * 20

    run(loop, scenario)


def test_power_of_two_choices_respects_exclude(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=100, seed=5)
        for n in range(20):
            pool.add(f"r{n}", f"r{n}")
        tried = {f"r{n}" for n in range(19)}
        chosen = {pool.try_acquire(exclude=tried) for _ in range(50)}
        assert {r.id for r in chosen if r is not None} == {"r19"}

    run(loop, scenario)


# -- waiting -------------------------------------------------------------------------------


def test_waiters_are_served_in_fifo_order(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=60)
        order: list[int] = []

        async def client(n: int) -> None:
            replica = await pool.acquire()
            order.append(n)
            pool.release(replica)

        tasks = []
        for n in range(6):
            tasks.append(asyncio.ensure_future(client(n)))
            await settle()
        assert pool.waiting == 6
        pool.release(busy)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4, 5]
        assert pool.in_flight == 0 and pool.waiting == 0

    run(loop, scenario)


def test_queue_timeout(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=0.5)
        task = spawn(pool)
        await advance(loop, 0.49)
        assert not task.done() and pool.waiting == 1
        await advance(loop, 0.02)
        assert isinstance(task.exception(), QueueTimeout)
        assert pool.waiting == 0
        # The freed slot is not handed to the request that gave up.
        pool.release(busy)
        assert pool.in_flight == 0

    run(loop, scenario)


def test_no_waiting_when_max_queue_wait_is_zero(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, wait=0)
        pool.add("r1", "a")
        assert pool.try_acquire() is not None
        with pytest.raises(QueueTimeout):
            await pool.acquire()

    run(loop, scenario)


def test_queue_full_is_refused_at_once(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, length=2)
        pool.add("r1", "a")
        assert pool.try_acquire() is not None
        waiting = [spawn(pool), spawn(pool)]
        await settle()
        with pytest.raises(QueueFull):
            await pool.acquire()
        assert pool.waiting == 2
        for task in waiting:
            task.cancel()
        await settle()
        assert pool.waiting == 0

    run(loop, scenario)


def test_no_replicas_yet_then_added_replica_serves_the_queue(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=2, wait=5)
        tasks = [spawn(pool) for _ in range(3)]
        await settle()
        assert pool.waiting == 3
        pool.add("r1", "a")
        await settle()
        assert [t.done() for t in tasks] == [True, True, False]
        assert pool.in_flight == 2 and pool.waiting == 1
        pool.release(tasks[0].result())
        await settle()
        assert tasks[2].result().id == "r1"

    run(loop, scenario)


def test_cancelled_waiter_leaves_the_queue_and_gets_nothing(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        gone = spawn(pool)
        await settle()
        gone.cancel()
        await settle()
        assert gone.cancelled() and pool.waiting == 0
        pool.release(busy)
        assert pool.in_flight == 0
        assert pool.try_acquire() is busy  # the slot is free, not leaked to the cancelled one

    run(loop, scenario)


def test_withdrawn_future_leaves_the_queue_and_gets_nothing(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        future = pool.enqueue()
        assert pool.waiting == 1
        pool.withdraw(future)
        assert future.cancelled() and pool.waiting == 0
        pool.release(busy)
        assert pool.try_acquire() is busy

    run(loop, scenario)


def test_slot_granted_before_withdraw_goes_to_the_next_waiter(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        first = pool.enqueue()
        second = pool.enqueue()
        pool.release(busy)
        assert first.done() and not second.done()
        pool.withdraw(first)  # e.g. its client went away in the same instant
        assert second.done() and second.result() is busy
        assert pool.in_flight == 1 and pool.waiting == 0

    run(loop, scenario)


def test_a_grant_callback_takes_the_slot_inside_the_release_that_frees_it(
    loop: ManualTimeLoop,
) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        grants: list[tuple[Replica[str], asyncio.Future[object]]] = []

        def on_grant(replica: Replica[str], future: asyncio.Future[object]) -> None:
            grants.append((replica, future))

        gone = pool.enqueue(on_grant=on_grant)
        taker = pool.enqueue(on_grant=on_grant)
        gone.cancel()  # its client left; it must not be given the slot
        pool.release(busy)
        # No task has run: the callback had the slot before release() returned, and the
        # future is left for it to resolve.
        assert grants == [(busy, taker)] and not taker.done()
        assert pool.in_flight == 1 and busy.in_flight == 1
        pool.withdraw(gone)
        assert pool.waiting == 0
        pool.release(busy)  # the callback's to release, once its request is over
        assert pool.in_flight == 0

    run(loop, scenario)


def test_a_grant_callback_that_fails_fails_its_own_request_only(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)

        def broken(replica: Replica[str], future: asyncio.Future[object]) -> None:
            raise ValueError("no way to send it")

        future = pool.enqueue(on_grant=broken)
        pool.release(busy)  # returns normally
        assert isinstance(future.exception(), ValueError)
        assert pool.in_flight == 1 and pool.waiting == 0
        pool.release(busy)
        assert pool.in_flight == 0

    run(loop, scenario)


def test_a_pool_used_again_on_a_new_loop_times_out_its_waiters_there() -> None:
    pool = ReplicaPool[str](slots_per_replica=1, max_queue_wait=1.0)
    pool.add("r1", "a")
    busy = pool.try_acquire()
    for _ in range(2):  # e.g. one test's event loop after another's
        loop = ManualTimeLoop(now=1000.0)

        async def scenario(loop: ManualTimeLoop = loop) -> None:
            task = spawn(pool)
            await advance(loop, 1.5)
            assert isinstance(task.exception(), QueueTimeout)

        run(loop, scenario)
        loop.close()
        assert loop.errors == []
    assert busy is not None and pool.waiting == 0


def test_slot_granted_to_a_waiter_cancelled_in_the_same_instant_is_passed_on(
    loop: ManualTimeLoop,
) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        first, second = spawn(pool), spawn(pool)
        await settle()
        pool.release(busy)  # grants the slot to `first`...
        first.cancel()  # ...whose client disconnects before its task runs again
        await settle()
        assert first.cancelled()
        assert second.result() is busy
        assert pool.in_flight == 1 and busy.in_flight == 1 and pool.waiting == 0

    run(loop, scenario)


def test_waiter_cancelled_just_before_a_release_gets_nothing(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        first, second = spawn(pool), spawn(pool)
        await settle()
        first.cancel()  # the client leaves; its task has not run yet...
        pool.release(busy)  # ...when the slot frees: it goes to the next one in line
        await settle()
        assert first.cancelled()
        assert second.result() is busy
        assert pool.in_flight == 1 and pool.waiting == 0

    run(loop, scenario)


def test_timeout_and_grant_in_the_same_instant(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=1.0)
        task = spawn(pool)
        await settle()
        loop.now += 1.0  # the timer is due, but the release below runs first
        pool.release(busy)
        await settle()
        assert task.result() is busy
        assert pool.in_flight == 1

    run(loop, scenario)


def test_timeout_due_while_the_waiter_is_being_cancelled(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=1.0)
        task = spawn(pool)
        await settle()
        loop.now += 1.0
        # The cancel runs in the same loop pass as the due timer, before the task resumes.
        loop.call_soon(task.cancel)
        await settle()
        assert task.cancelled() and pool.waiting == 0
        pool.release(busy)
        assert pool.in_flight == 0

    run(loop, scenario)


def test_excluded_waiter_is_skipped_but_keeps_its_place(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, wait=5)
        pool.add("r1", "a")
        pool.add("r2", "b")
        r1, r2 = pool.try_acquire(), pool.try_acquire()
        assert r1 is not None and r2 is not None and r1.id == "r1"
        retry = spawn(pool, exclude={"r1"})  # its request already failed on r1
        plain = spawn(pool)
        await settle()
        pool.release(r1)
        await settle()
        assert plain.result() is r1 and not retry.done()
        pool.release(r2)
        await settle()
        assert retry.result() is r2

    run(loop, scenario)


def test_max_queue_wait_can_change(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, wait=10)
        pool.add("r1", "a")
        assert pool.try_acquire() is not None
        pool.max_queue_wait = 0.1
        task = spawn(pool)
        await advance(loop, 0.2)
        assert isinstance(task.exception(), QueueTimeout)

    run(loop, scenario)


def test_a_lowered_wait_applies_to_later_waiters_behind_older_ones(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=10)
        older = spawn(pool)
        await settle()
        pool.max_queue_wait = 0.1
        younger = spawn(pool)
        await advance(loop, 0.2)
        assert isinstance(younger.exception(), QueueTimeout)
        assert not older.done() and pool.waiting == 1
        pool.max_queue_wait = 0.5
        youngest = spawn(pool)
        await advance(loop, 9.0)  # 9.2 s in: the older waiter has 0.8 s left
        assert isinstance(youngest.exception(), QueueTimeout)
        assert not older.done()
        await advance(loop, 1.0)
        assert isinstance(older.exception(), QueueTimeout)
        assert pool.waiting == 0
        pool.release(busy)

    run(loop, scenario)


def test_each_waiter_times_out_at_its_own_deadline(loop: ManualTimeLoop) -> None:
    step = 0.125  # exact in binary, so deadlines compare exactly

    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=1.0)
        tasks = []
        for _ in range(5):
            tasks.append(spawn(pool))
            await advance(loop, step)
        # Queued at 0, 1, ... 4 steps; now 5 steps in. The first is served.
        pool.release(busy)
        await settle()
        assert tasks[0].result().id == "r1"
        for _ in range(3):
            await advance(loop, step)  # up to 1.0 s: none is due yet
            assert not any(t.done() for t in tasks[1:])
        for index in range(1, 5):
            await advance(loop, step)  # 1.0 s + index steps: the index-th waiter is due
            assert [t.done() for t in tasks[1:]] == [i <= index for i in range(1, 5)]
            assert isinstance(tasks[index].exception(), QueueTimeout)
        assert pool.waiting == 0

    run(loop, scenario)


# -- drain and remove ----------------------------------------------------------------------


def test_drain_resolves_when_in_flight_requests_finish(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=2)
        pool.add("r1", "a")
        pool.add("r2", "b")
        a, b = pool.try_acquire(), pool.try_acquire()
        c = pool.try_acquire()
        assert a is not None and b is not None and c is not None
        on_r1 = [r for r in (a, b, c) if r.id == "r1"]
        assert len(on_r1) == 2
        drained = pool.drain("r1")
        assert pool.drain("r1") is drained
        assert pool.ready_replicas == 1 and pool.draining_replicas == 1 and pool.capacity == 2
        # New work goes to r2 only.
        d = pool.try_acquire()
        assert d is not None and d.id == "r2"
        assert pool.try_acquire() is None
        pool.release(on_r1[0])
        await settle()
        assert not drained.done()
        pool.release(on_r1[1])
        await settle()
        assert drained.done()
        assert pool.try_acquire() is None  # r1 stays out of rotation until removed

    run(loop, scenario)


def test_drain_of_idle_or_unknown_replica_is_already_done(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop)
        pool.add("r1", "a")
        assert pool.drain("r1").done()
        assert pool.drain("nope").done()

    run(loop, scenario)


def test_draining_replica_does_not_serve_the_queue(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        waiter = spawn(pool)
        await settle()
        drained = pool.drain("r1")
        pool.release(busy)
        await settle()
        assert drained.done() and not waiter.done()
        pool.add("r2", "b")
        await settle()
        assert waiter.result().id == "r2"

    run(loop, scenario)


def test_cancelled_drain_future_does_not_break_release(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.drain("r1"), timeout=0)
        pool.release(busy)
        assert pool.in_flight == 0

    run(loop, scenario)


def test_remove_with_requests_in_flight(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=2, wait=5)
        pool.add("r1", "a")
        held = [pool.try_acquire(), pool.try_acquire()]
        waiter = spawn(pool)
        await settle()
        drained = pool.drain("r1")
        pool.remove("r1")
        pool.remove("r1")  # already gone: nothing to do
        assert pool.replicas == () and pool.capacity == 0
        for replica in held:
            assert replica is not None
            pool.release(replica)  # must not hand the removed replica to the waiter
        await settle()
        assert drained.done() and not waiter.done()
        assert pool.in_flight == 0
        # The same id may come back as a new replica.
        pool.add("r1", "a2")
        await settle()
        assert waiter.result().target == "a2"

    run(loop, scenario)


def test_replica_removed_between_grant_and_resume(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool, busy = full_pool(loop, wait=5)
        waiter = spawn(pool)
        await settle()
        pool.release(busy)  # granted to the waiter...
        pool.remove("r1")  # ...and the replica disappears before it runs
        await settle()
        replica = waiter.result()
        assert replica is busy and replica.draining
        # The data plane's attempt fails as undelivered; releasing must stay consistent.
        pool.release(replica)
        assert pool.in_flight == 0 and replica.in_flight == 0

    run(loop, scenario)


def test_double_release_is_an_error(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop)
        pool.add("r1", "a")
        replica = pool.try_acquire()
        assert replica is not None
        pool.release(replica)
        with pytest.raises(RuntimeError, match="without a slot held"):
            pool.release(replica)
        assert pool.in_flight == 0

    run(loop, scenario)


def test_configuration_errors(loop: ManualTimeLoop) -> None:
    with pytest.raises(ValueError, match="slots_per_replica"):
        ReplicaPool(slots_per_replica=0, max_queue_wait=1)
    pool = make_pool(loop)
    pool.add("r1", "a")
    with pytest.raises(ValueError, match="'r1' is already in the pool"):
        pool.add("r1", "b")


# -- demand ----------------------------------------------------------------------------------


def test_demand_is_time_weighted(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, wait=60)
        pool.add("r1", "a")
        pool.add("r2", "b")
        pool.read_demand()
        a, b = pool.try_acquire(), pool.try_acquire()
        assert a is not None and b is not None
        loop.now += 0.5
        pool.release(a)
        pool.release(b)
        loop.now += 0.5
        assert pool.read_demand() == pytest.approx(1.0)
        loop.now += 1.0
        assert pool.read_demand() == 0.0

    run(loop, scenario)


def test_demand_counts_waiting_requests(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, wait=60)
        pool.add("r1", "a")
        pool.read_demand()
        busy = pool.try_acquire()
        assert busy is not None
        waiters = [spawn(pool) for _ in range(3)]
        await settle()
        loop.now += 1.0  # 1 in flight + 3 waiting for 1 s
        for task in waiters:
            task.cancel()
        await settle()
        loop.now += 1.0  # 1 in flight for 1 s
        assert pool.read_demand() == pytest.approx(2.5)
        # No time elapsed since the last read: the current level.
        assert pool.read_demand() == 1.0

    run(loop, scenario)


def test_demand_area_is_cumulative_and_reading_it_disturbs_no_one(loop: ManualTimeLoop) -> None:
    async def scenario() -> None:
        pool = make_pool(loop, slots=2, wait=60)
        pool.add("r1", "a")
        assert pool.demand_area() == (0.0, 1000.0)
        held = [pool.try_acquire(), pool.try_acquire()]
        assert all(held) and pool.demand == 2
        loop.now += 1.0
        # Two readers and the loop's own read_demand() interleave; each sees its window.
        first_area, first_at = pool.demand_area()
        assert (first_area, first_at) == (pytest.approx(2.0), 1001.0)
        assert pool.read_demand() == pytest.approx(2.0)  # since the pool's start
        loop.now += 1.0
        second_area, second_at = pool.demand_area()
        assert second_area == pytest.approx(4.0)
        pool.release(held[0])
        loop.now += 2.0  # one in flight for 2 s
        area, now = pool.demand_area()
        assert (area - first_area) / (now - first_at) == pytest.approx(4 / 3)
        assert (area - second_area) / (now - second_at) == pytest.approx(1.0)
        assert pool.read_demand() == pytest.approx(4 / 3)
        # Still cumulative: nobody's read reset it.
        assert pool.demand_area()[0] == pytest.approx(6.0)

    run(loop, scenario)


# -- random interleavings ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_keep_every_invariant(loop: ManualTimeLoop, seed: int) -> None:
    """Random add/drain/remove/acquire/release/cancel/time steps, checked after each one."""
    rng = random.Random(seed)
    slots = rng.choice([1, 2, 3])
    max_replicas = rng.choice([3, 12])  # 12: the power-of-two-choices path too
    pool = make_pool(loop, slots=slots, wait=1.0, length=rng.choice([0, 2, 8, 1024]), seed=seed)
    held: list[Replica[str]] = []
    tasks: list[tuple[int, asyncio.Task[Replica[str]], Collection[str]]] = []
    completed: list[int] = []  # task numbers in the order they got a slot
    unrestricted: set[int] = set()  # task numbers of waiters without exclusions
    drains: list[tuple[Replica[str], asyncio.Future[None]]] = []
    counter = iter(range(1_000_000))

    def collect() -> None:
        for entry in list(tasks):
            number, task, exclude = entry
            if not task.done():
                continue
            tasks.remove(entry)
            if task.cancelled():
                continue
            error = task.exception()
            if error is None:
                replica = task.result()
                assert replica.id not in exclude
                held.append(replica)
                completed.append(number)
            else:
                assert isinstance(error, (QueueFull, QueueTimeout))

    def random_exclude() -> Collection[str]:
        if rng.random() < 0.8:
            return ()
        ids = [r.id for r in pool.replicas]
        return set(rng.sample(ids, k=min(len(ids), rng.randint(1, 2))))

    async def step() -> None:
        op = rng.choices(
            ["add", "drain", "remove", "try", "wait", "release", "cancel", "race", "time"],
            weights=[2, 1, 1, 3, 5, 5, 2, 3, 3],
        )[0]
        ids = [r.id for r in pool.replicas]
        if op == "add" and len(ids) < max_replicas:
            pool.add(f"r{next(counter)}", "target")
        elif op == "drain" and ids:
            replica = pool.get(rng.choice(ids))
            assert replica is not None
            drains.append((replica, pool.drain(replica.id)))
        elif op == "remove" and ids:
            pool.remove(rng.choice(ids))
        elif op == "try":
            exclude = random_exclude()
            replica = pool.try_acquire(exclude)
            if replica is not None:
                assert not replica.draining and replica.id not in exclude
                held.append(replica)
        elif op == "wait":
            exclude = random_exclude()
            number = next(counter)
            if not exclude:
                unrestricted.add(number)
            tasks.append((number, spawn(pool, exclude), exclude))
        elif op == "release" and held:
            pool.release(held.pop(rng.randrange(len(held))))
        elif op == "cancel" and tasks:
            rng.choice(tasks)[1].cancel()
        elif op == "race" and held and tasks:
            # A slot frees and the oldest waiter's client leaves in the same instant,
            # in either order.
            replica = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.5:
                pool.release(replica)
                tasks[0][1].cancel()
            else:
                tasks[0][1].cancel()
                pool.release(replica)
        elif op == "time":
            loop.now += rng.uniform(0, 0.6)
        await settle()
        collect()

    def check() -> None:
        check_accounting(pool, held)
        pending = [(n, exclude) for n, task, exclude in tasks if not task.done()]
        assert pool.waiting == len(pending)
        # Work conserving: nobody waits while a slot they may use is free.
        for _, exclude in pending:
            for replica in pool.replicas:
                free = not replica.draining and replica.in_flight < replica.slots
                assert not (free and replica.id not in exclude)
        for replica, future in drains:
            assert future.done() == (replica.in_flight == 0) or future.cancelled()

    async def scenario() -> None:
        for _ in range(300):
            await step()
            check()
        # FIFO: waiters that could use any replica got their slots in arrival order.
        plain = [n for n in completed if n in unrestricted]
        assert plain == sorted(plain)
        for _, task, _ in tasks:
            task.cancel()
        await settle()
        collect()
        while held:
            pool.release(held.pop())
        await settle()
        check()
        assert pool.in_flight == 0 and pool.waiting == 0
        assert all(future.done() for _, future in drains)

    run(loop, scenario)
