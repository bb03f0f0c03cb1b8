"""Which replica of a deployment serves a request, and who waits when none is free.

A `ReplicaPool` holds one deployment's replicas, each with a fixed number of slots
(`maxConcurrentRequestsPerContainer`). A request takes a slot on the ready replica with
the fewest requests in flight; when every slot is taken it waits in a bounded FIFO queue
for at most `maxQueueWaitMs`. A freed slot goes straight to the oldest waiter, so the queue
is served in order and a slot is never free while someone eligible waits for it.

Accounting rule: a slot is counted on its replica from the moment it is granted until
`release()`, whoever holds it, including a waiter whose task has not resumed yet.
Everything runs on the event loop thread; no method awaits except `acquire()`. Callers
that must wait on something else at the same time (the data plane watches for its client
going away) use the future from `enqueue()` and hand it back with `withdraw()`. A caller
can also take a granted slot in the callback that frees it (`enqueue(on_grant=...)`): the
data plane sends the queued request from there, before its task has run again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any, Final, Generic, TypeVar

from scoring_runtime.alarm import Alarm

T = TypeVar("T")

# Above this many ready replicas, sample two at random instead of scanning them all.
SCAN_LIMIT: Final = 8


class QueueFull(Exception):
    """Too many requests are already waiting for this deployment."""


class QueueTimeout(Exception):
    """No slot became free within the deployment's maximum queue wait."""


class Replica(Generic[T]):
    """One scoring process (or pod) and its slots; `target` is how to reach it.

    A plain class rather than a dataclass: mypyc cannot compile a generic dataclass."""

    def __init__(self, id: str, target: T, slots: int) -> None:
        self.id = id
        self.target = target
        self.slots = slots
        self.in_flight = 0
        # Set by drain() and remove(): the replica gets no new work from then on.
        self.draining = False

    def __repr__(self) -> str:
        return f"Replica(id={self.id!r}, in_flight={self.in_flight}, draining={self.draining})"


# Takes a slot granted to a queued request, in place of the pool resolving its future.
GrantCallback = Callable[[Replica[Any], "asyncio.Future[Any]"], object]


class _Waiter:
    """A queued request: the future its slot arrives on, replicas it must not get, the
    loop time its wait ends, and who takes the slot when it is granted."""

    __slots__ = ("deadline", "exclude", "future", "on_grant")

    def __init__(
        self,
        future: asyncio.Future[Any],
        exclude: Collection[str],
        deadline: float,
        on_grant: GrantCallback | None,
    ) -> None:
        self.future = future
        self.exclude = exclude
        self.deadline = deadline
        self.on_grant = on_grant


class ReplicaPool(Generic[T]):
    """One per deployment: replicas with per-replica slots and a bounded FIFO wait queue."""

    def __init__(
        self,
        *,
        slots_per_replica: int,
        max_queue_wait: float,
        max_queue_length: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if slots_per_replica < 1:
            raise ValueError(f"slots_per_replica must be at least 1, got {slots_per_replica}")
        if max_queue_length < 0:
            raise ValueError(f"max_queue_length must not be negative, got {max_queue_length}")
        self.slots_per_replica = slots_per_replica
        # Both may be changed at any time (a service update); they apply to later requests.
        self.max_queue_wait = max_queue_wait
        self.max_queue_length = max_queue_length
        self._clock = clock
        self._random = (rng or random.Random()).random
        # Every replica not yet removed, draining or not, by id.
        self._replicas: dict[str, Replica[T]] = {}
        # The non-draining ones: the only candidates for new work.
        self._ready: list[Replica[T]] = []
        # Free slots over `_ready`, so a saturated pool is known without a scan.
        self._free = 0
        self._in_flight = 0
        # Oldest first, by future; an OrderedDict removes a withdrawn waiter from the
        # middle in O(1).
        self._waiters: OrderedDict[asyncio.Future[Any], _Waiter] = OrderedDict()
        self._drained: dict[Replica[T], asyncio.Future[None]] = {}
        # One timer ends every wait: it is set for the oldest waiter's deadline, and each
        # time it fires it expires whoever is due and moves on to the next deadline. In a
        # FIFO queue with one maximum wait, deadlines come in order; `_unordered` records
        # that max_queue_wait was lowered, so a younger waiter may be due before older ones.
        self._expiry: Alarm | None = None  # made on the running loop, at the first wait
        self._unordered = False
        # ∫ (in_flight + waiting) dt since the pool was made, up to `_changed_at`.
        self._changed_at = clock()
        self._total_area = 0.0
        # read_demand()'s own reading of it, as of its previous call.
        self._read_at = self._changed_at
        self._read_area = 0.0

    # -- state ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Slots held, on any replica, including removed ones not yet released."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def ready_replicas(self) -> int:
        return len(self._ready)

    @property
    def draining_replicas(self) -> int:
        return len(self._replicas) - len(self._ready)

    @property
    def capacity(self) -> int:
        """Slots on ready replicas, busy or not."""
        return len(self._ready) * self.slots_per_replica

    @property
    def replicas(self) -> tuple[Replica[T], ...]:
        """Every replica not yet removed, draining ones included."""
        return tuple(self._replicas.values())

    def get(self, replica_id: str) -> Replica[T] | None:
        return self._replicas.get(replica_id)

    @property
    def demand(self) -> int:
        """The demand level now: requests in flight plus requests waiting."""
        return self._in_flight + len(self._waiters)

    def demand_area(self) -> tuple[float, float]:
        """(∫ demand dt from the pool's start until now, now).

        Reading it changes nothing, so any number of readers each keep the pair from
        their previous call and average over their own window: (Δarea / Δnow).
        """
        now = self._clock()
        return self._total_area + self.demand * (now - self._changed_at), now

    def read_demand(self) -> float:
        """Time-averaged demand since the previous call (or since the pool's start): the
        local control loop's reading. Other readers use `demand_area()` themselves."""
        area, now = self.demand_area()
        elapsed = now - self._read_at
        average = (area - self._read_area) / elapsed if elapsed > 0 else float(self.demand)
        self._read_area, self._read_at = area, now
        return average

    def _integrate(self) -> None:
        """Account for the demand level so far; called before every change to it."""
        now = self._clock()
        self._total_area += (self._in_flight + len(self._waiters)) * (now - self._changed_at)
        self._changed_at = now

    # -- replicas ------------------------------------------------------------------------

    def add(self, replica_id: str, target: T) -> None:
        """Put a replica into rotation; requests already waiting start on it at once."""
        if replica_id in self._replicas:
            raise ValueError(f"replica '{replica_id}' is already in the pool")
        replica = Replica(id=replica_id, target=target, slots=self.slots_per_replica)
        self._replicas[replica_id] = replica
        self._ready.append(replica)
        self._free += replica.slots
        for _ in range(replica.slots):
            if not self._waiters or not self._hand_over(replica):
                break

    def drain(self, replica_id: str) -> asyncio.Future[None]:
        """Send no new work to a replica; the future resolves once it has nothing in flight.

        Call on the event loop. An unknown id is a replica already gone: already drained.
        """
        loop = asyncio.get_running_loop()
        replica = self._replicas.get(replica_id)
        if replica is None:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        self._stop_new_work(replica)
        future = self._drained.get(replica)
        if future is None or future.cancelled():
            future = loop.create_future()
            if replica.in_flight == 0:
                future.set_result(None)
            else:
                self._drained[replica] = future
        return future

    def remove(self, replica_id: str) -> None:
        """Forget a replica now. Its in-flight requests finish (or fail) on their own and
        their `release()` only frees the count; a pending drain() still resolves then."""
        replica = self._replicas.pop(replica_id, None)
        if replica is not None:
            self._stop_new_work(replica)

    def _stop_new_work(self, replica: Replica[T]) -> None:
        if replica.draining:
            return
        replica.draining = True
        self._ready.remove(replica)
        self._free -= replica.slots - replica.in_flight

    # -- slots ---------------------------------------------------------------------------

    def try_acquire(self, exclude: Collection[str] = ()) -> Replica[T] | None:
        """A slot on the least busy ready replica not in `exclude`, or None if none is free.

        `exclude` holds replica ids a request was already tried on without being delivered.
        """
        if self._free == 0:
            return None
        replica = self._choose(exclude)
        if replica is not None:
            self._take(replica)
        return replica

    async def acquire(self, exclude: Collection[str] = ()) -> Replica[T]:
        """A slot now, or the first one freed for this request within `max_queue_wait`.

        Raises QueueFull at once when the queue is at its limit, QueueTimeout after the wait.
        A cancelled caller (its client went away) leaves the queue and holds nothing.
        """
        replica = self.try_acquire(exclude)
        if replica is not None:
            return replica
        future = self.enqueue(exclude)
        try:
            return await future
        except asyncio.CancelledError:
            self.withdraw(future)
            raise

    def enqueue(
        self, exclude: Collection[str] = (), on_grant: GrantCallback | None = None
    ) -> asyncio.Future[Any]:
        """Join the queue: the future gets the first slot freed for this request (a
        Replica), or QueueTimeout after `max_queue_wait`. Raises QueueFull at once when the
        queue is at its limit. A caller that stops waiting must `withdraw()` the future.

        With `on_grant`, the slot is handed to `on_grant(replica, future)` instead, from
        the callback that freed it, and the future is left to it: the slot is then the
        caller's, to `release()` itself, and `withdraw()` no longer applies.
        """
        if len(self._waiters) >= self.max_queue_length:
            raise QueueFull
        if self.max_queue_wait <= 0:
            raise QueueTimeout
        expiry = self._expiry
        # The loop this pool last waited on, while it runs: asking asyncio for the running
        # loop costs a getpid() system call per request on Python 3.11.
        if expiry is not None and expiry.loop.is_running():
            loop = expiry.loop
        else:
            loop = asyncio.get_running_loop()
            expiry = self._expiry = Alarm(loop, self._expire_due)
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self.max_queue_wait
        self._integrate()
        self._waiters[future] = _Waiter(future, exclude, deadline, on_grant)
        if expiry.is_set and deadline < expiry.when:
            self._unordered = True
        expiry.set(deadline)
        return future

    def withdraw(self, future: asyncio.Future[Any]) -> None:
        """Leave the queue without being served; a slot granted in the same instant goes
        to the next waiter, because this request will never be sent."""
        if future in self._waiters:
            self._integrate()
            del self._waiters[future]
            future.cancel()
        elif future.done() and not future.cancelled() and future.exception() is None:
            self.release(future.result())

    def release(self, replica: Replica[T]) -> None:
        """Free a slot taken by try_acquire()/acquire(); the oldest eligible waiter gets it."""
        if replica.in_flight <= 0:
            raise RuntimeError(f"release() of replica '{replica.id}' without a slot held")
        self._integrate()
        replica.in_flight -= 1
        self._in_flight -= 1
        if replica.draining:
            if replica.in_flight == 0:
                future = self._drained.pop(replica, None)
                if future is not None and not future.done():
                    future.set_result(None)
            return
        self._free += 1
        if self._waiters:
            self._hand_over(replica)

    def _choose(self, exclude: Collection[str]) -> Replica[T] | None:
        """Least in flight among ready replicas with a free slot (two random choices if many)."""
        ready = self._ready
        count = len(ready)
        if count > SCAN_LIMIT:
            index = int(self._random() * count)
            other = int(self._random() * (count - 1))
            first = ready[index]
            second = ready[other + 1 if other >= index else other]
            if second.in_flight < first.in_flight:
                first, second = second, first
            for candidate in (first, second):
                if candidate.in_flight < candidate.slots and candidate.id not in exclude:
                    return candidate
            # Both samples full or excluded: a slot is free elsewhere, so find it.
        best: Replica[T] | None = None
        for replica in ready:
            in_flight = replica.in_flight
            if in_flight < replica.slots and (best is None or in_flight < best.in_flight):
                if exclude and replica.id in exclude:
                    continue
                best = replica
                if in_flight == 0:
                    break
        return best

    def _take(self, replica: Replica[T]) -> None:
        self._integrate()
        replica.in_flight += 1
        self._in_flight += 1
        self._free -= 1

    def _hand_over(self, replica: Replica[T]) -> bool:
        """Grant a free slot of a ready `replica` to the oldest waiter that may have it."""
        for future, waiter in self._waiters.items():
            # A cancelled waiter is still listed until its task runs; it gets nothing.
            if future.done() or (waiter.exclude and replica.id in waiter.exclude):
                continue
            break
        else:
            return False
        self._take(replica)
        del self._waiters[future]
        if waiter.on_grant is None:
            future.set_result(replica)
            return True
        try:
            waiter.on_grant(replica, future)
        except Exception as exc:
            # Fail the request it was for, not the release() (a connection's callback)
            # that freed the slot. The slot is the callback's, as if it had succeeded.
            if not future.done():
                future.set_exception(exc)
        return True

    def _expire_due(self) -> None:
        """Fail every waiter whose maximum wait is over with QueueTimeout."""
        assert self._expiry is not None  # it is what calls this
        now = self._expiry.loop.time()
        due: list[asyncio.Future[Any]] = []
        next_deadline: float | None = None
        ordered = True  # the waiters left are in deadline order
        previous = 0.0
        for future, waiter in self._waiters.items():
            deadline = waiter.deadline
            if deadline <= now:
                due.append(future)
                continue
            if not self._unordered:
                next_deadline = deadline
                break
            if next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
            ordered = ordered and deadline >= previous
            previous = deadline
        self._unordered = not ordered
        if next_deadline is not None:
            self._expiry.set(next_deadline)
        if due:
            self._integrate()
            for future in due:
                del self._waiters[future]
                if not future.done():
                    future.set_exception(QueueTimeout())
